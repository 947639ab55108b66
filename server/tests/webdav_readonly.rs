//! The WebDAV face (read-only step) against a real node with curl: GET and HEAD with ranges,
//! conditional requests, PROPFIND depth 0 and 1, a refused write, and a read that cannot be
//! served failing instead of returning zero-filled bytes.

mod common;

use std::process::Command;

use common::process::{files_under, free_port, webdav_port, Server};

fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let o = Command::new("curl")
        .args(["-s", "-S", "-D", "-", "-o", "/dev/stderr"])
        .args(args)
        .output()
        .expect("curl runs (it is installed with the test tools)");
    (String::from_utf8_lossy(&o.stdout).into_owned(), o.stderr)
}

fn status(headers: &str) -> u16 {
    headers
        .lines()
        .rev()
        .find(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn webdav_serves_the_tree_read_only() {
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(t.path(), port, &[]);
    let base = format!("http://127.0.0.1:{}", webdav_port(port));
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(t.path().join("f.bin"), &data).unwrap();
    s.ok(&["mkdir", "/Films and more"]);
    s.ok(&[
        "put",
        "f.bin",
        "/Films and more/été #1.mkv",
        "--policy",
        "ec:4+2",
    ]);
    let url = format!("{base}/Films%20and%20more/%C3%A9t%C3%A9%20%231.mkv");

    // Whole GET, with a strong ETag and Last-Modified.
    let (h, body) = curl(&[&url]);
    assert_eq!(status(&h), 200, "{h}");
    assert!(body == data, "GET returned other bytes");
    let etag = header(&h, "etag").expect("ETag").to_owned();
    assert!(header(&h, "last-modified").is_some(), "{h}");
    // Ranges around 64 KiB, open-ended and suffix ranges.
    for (range, from, to) in [
        ("bytes=65536-131071", 65_536usize, 131_072usize),
        ("bytes=2999000-", 2_999_000, 3_000_000),
        ("bytes=-100", 2_999_900, 3_000_000),
    ] {
        let (h, body) = curl(&["-H", &format!("Range: {range}"), &url]);
        assert_eq!(status(&h), 206, "{range}: {h}");
        assert!(body == data[from..to], "{range}: wrong bytes");
    }
    // Conditional GET.
    let (h, _) = curl(&["-H", &format!("If-None-Match: {etag}"), &url]);
    assert_eq!(status(&h), 304, "{h}");
    // HEAD.
    let (h, _) = curl(&["-I", &url]);
    assert_eq!(status(&h), 200);
    assert_eq!(header(&h, "content-length"), Some("3000000"));
    // PROPFIND depth 1 on the directory lists the file, depth 0 only the directory.
    let (h, body) = curl(&[
        "-X",
        "PROPFIND",
        "-H",
        "Depth: 1",
        &format!("{base}/Films%20and%20more/"),
    ]);
    assert_eq!(status(&h), 207, "{h}");
    let xml = String::from_utf8_lossy(&body);
    assert!(
        xml.contains("%C3%A9t%C3%A9%20%231.mkv") || xml.contains("été"),
        "{xml}"
    );
    assert!(
        xml.contains("<D:getcontentlength>3000000<") || xml.contains("getcontentlength>3000000<"),
        "{xml}"
    );
    let (h, body) = curl(&["-X", "PROPFIND", "-H", "Depth: 0", &format!("{base}/")]);
    assert_eq!(status(&h), 207, "{h}");
    assert!(!String::from_utf8_lossy(&body).contains("mkv"));
    // Missing, and writes refused for now.
    let (h, _) = curl(&[&format!("{base}/nope")]);
    assert_eq!(status(&h), 404);
    let (h, _) = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        "x",
        &format!("{base}/new.txt"),
    ]);
    assert!(matches!(status(&h), 403 | 405), "{h}");
    assert!(s.json(&["ls", "/"])["entries"].as_array().unwrap().len() == 1);

    // Three of six parts of every segment lost (m = 2): the read fails, never zero bytes.
    let stat = s.json(&["stat", "/Films and more/été #1.mkv"]);
    let fid = stat["file_id"].as_str().unwrap().to_owned();
    let mut removed = 0;
    for e in files_under(&t.path().join("wormfs-data/disks")) {
        let n = e.file_name().unwrap().to_string_lossy().into_owned();
        if n.starts_with(&fid)
            && (n.ends_with("-p0.wp") || n.ends_with("-p1.wp") || n.ends_with("-p2.wp"))
        {
            std::fs::remove_file(&e).unwrap();
            removed += 1;
        }
    }
    assert!(removed >= 3);
    let o = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &url,
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    // Either an error status, or the transfer is cut short (curl exit 18): never a complete
    // 200 with zero-filled bytes.
    assert!(
        !o.status.success() || !out.starts_with('2'),
        "an unreadable file was served as complete: {out}"
    );
    s.term();
}
