//! Unraid: the Community Applications template (packaging/unraid/wormfs.xml) has every field CA
//! and the Docker manager read, and the `docker create` line the Docker manager makes of it
//! starts a node that turns healthy; the native plugin (packaging/unraid/wormfs.plg, built by
//! build-plg.sh) installs, starts on `disks_mounted`, stops on `stopping_svcs` and removes
//! itself in a debootstrap chroot, run the way Unraid's plugin manager runs a .plg.
//!
//! Not checked here (Unraid cannot run on this machine): emhttp itself (the event hooks are run
//! by hand, in emhttp's order), Slackware's tools (the chroot is Debian: bash, tar, setpriv,
//! setsid as in util-linux), the plugin manager's PHP (reproduced below from its source:
//! FILE elements in order, URL + SHA256, INLINE with Name and Mode, Run, Method="remove"), and
//! the flash drive's FAT file system (/boot here is a folder of the chroot).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::support::{
    docker, http_code, image, ok, packaged_binary, repo, rootfs, run, temp_dir, unique, wait_for,
    wait_healthy, workspace_version, Container, Network,
};

// ---------------------------------------------------------------------------------------------
// A small, strict XML reader: elements, attributes, text, CDATA, comments, processing
// instructions, a DOCTYPE without an internal subset, the five entities and character
// references. Anything else (a tag left open, a stray `<` or `&`, a duplicate attribute) is an
// error, as it would be for PHP's SimpleXML, which both CA and the plugin manager use.

#[derive(Debug, Clone)]
struct El {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    El(El),
    Text(String),
}

impl El {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn elements<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a El> + 'a {
        self.children.iter().filter_map(move |n| match n {
            Node::El(e) if e.name == name => Some(e),
            _ => None,
        })
    }
    fn child(&self, name: &str) -> Option<&El> {
        self.children.iter().find_map(|n| match n {
            Node::El(e) if e.name == name => Some(e),
            _ => None,
        })
    }
    /// The element's own text (CDATA included), as SimpleXML with LIBXML_NOCDATA gives it.
    fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
    /// The text of child `name`, which must exist.
    fn field(&self, name: &str) -> String {
        self.child(name)
            .unwrap_or_else(|| panic!("<{}> has no <{name}>", self.name))
            .text()
    }
}

struct Reader<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.i..]
    }
    fn err<T>(&self, what: &str) -> Result<T, String> {
        let line = self.s[..self.i].matches('\n').count() + 1;
        Err(format!("line {line}: {what}"))
    }
    fn skip_ws(&mut self) {
        let n = self.rest().len() - self.rest().trim_start().len();
        self.i += n;
    }
    fn skip_past(&mut self, end: &str) -> Result<&'a str, String> {
        match self.rest().find(end) {
            Some(p) => {
                let body = &self.rest()[..p];
                self.i += p + end.len();
                Ok(body)
            }
            None => self.err(&format!("no closing {end}")),
        }
    }
    /// Comments, processing instructions and (before the root) a DOCTYPE.
    fn skip_misc(&mut self, doctype_ok: bool) -> Result<(), String> {
        loop {
            self.skip_ws();
            if self.rest().starts_with("<!--") {
                self.i += 4;
                let body = self.skip_past("-->")?;
                if body.contains("--") {
                    return self.err("`--` inside a comment");
                }
            } else if self.rest().starts_with("<?") {
                self.skip_past("?>")?;
            } else if doctype_ok && self.rest().starts_with("<!DOCTYPE") {
                let body = self.skip_past(">")?;
                if body.contains('[') {
                    return self.err("a DOCTYPE internal subset is not read here");
                }
            } else {
                return Ok(());
            }
        }
    }
    fn name(&mut self) -> Result<String, String> {
        let n = self
            .rest()
            .find(|c: char| !(c.is_alphanumeric() || "_-.:".contains(c)))
            .unwrap_or(self.rest().len());
        if n == 0
            || !self
                .rest()
                .starts_with(|c: char| c.is_alphabetic() || c == '_')
        {
            return self.err("a name was expected");
        }
        let name = self.rest()[..n].to_owned();
        self.i += n;
        Ok(name)
    }
    fn element(&mut self) -> Result<El, String> {
        if !self.rest().starts_with('<') {
            return self.err("an element was expected");
        }
        self.i += 1;
        let name = self.name()?;
        let mut attrs: Vec<(String, String)> = Vec::new();
        loop {
            let had_ws = self.rest().starts_with(char::is_whitespace);
            self.skip_ws();
            if self.rest().starts_with("/>") {
                self.i += 2;
                return Ok(El {
                    name,
                    attrs,
                    children: Vec::new(),
                });
            }
            if self.rest().starts_with('>') {
                self.i += 1;
                break;
            }
            if !had_ws {
                return self.err("whitespace was expected before an attribute");
            }
            let key = self.name()?;
            self.skip_ws();
            if !self.rest().starts_with('=') {
                return self.err(&format!("attribute {key} has no value"));
            }
            self.i += 1;
            self.skip_ws();
            let quote = match self.rest().chars().next() {
                Some(q @ ('"' | '\'')) => q,
                _ => return self.err(&format!("attribute {key}'s value is not quoted")),
            };
            self.i += 1;
            let raw = self.skip_past(&quote.to_string())?;
            if raw.contains('<') {
                return self.err(&format!("`<` in attribute {key}"));
            }
            if attrs.iter().any(|(k, _)| *k == key) {
                return self.err(&format!("attribute {key} given twice"));
            }
            attrs.push((key, self.decode(raw)?));
        }
        let mut children = Vec::new();
        loop {
            if self.rest().starts_with("</") {
                self.i += 2;
                let end = self.name()?;
                self.skip_ws();
                if end != name || !self.rest().starts_with('>') {
                    return self.err(&format!("</{end}> closes <{name}>"));
                }
                self.i += 1;
                return Ok(El {
                    name,
                    attrs,
                    children,
                });
            } else if self.rest().starts_with("<![CDATA[") {
                self.i += 9;
                let body = self.skip_past("]]>")?;
                children.push(Node::Text(body.to_owned()));
            } else if self.rest().starts_with("<!--") || self.rest().starts_with("<?") {
                self.skip_misc(false)?;
            } else if self.rest().starts_with('<') {
                children.push(Node::El(self.element()?));
            } else if self.rest().is_empty() {
                return self.err(&format!("<{name}> is not closed"));
            } else {
                let n = self.rest().find('<').unwrap_or(self.rest().len());
                let raw = &self.rest()[..n];
                if raw.contains("]]>") {
                    return self.err("`]]>` in text");
                }
                let text = self.decode(raw)?;
                self.i += n;
                children.push(Node::Text(text));
            }
        }
    }
    fn decode(&self, raw: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = raw;
        while let Some(p) = rest.find('&') {
            out.push_str(&rest[..p]);
            let Some(end) = rest[p..].find(';') else {
                return self.err("`&` without `;`");
            };
            let ent = &rest[p + 1..p + end];
            let c = match ent {
                "lt" => '<',
                "gt" => '>',
                "amp" => '&',
                "quot" => '"',
                "apos" => '\'',
                _ if ent.starts_with("#x") => u32::from_str_radix(&ent[2..], 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or(format!("bad reference &{ent};"))?,
                _ if ent.starts_with('#') => ent[1..]
                    .parse::<u32>()
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or(format!("bad reference &{ent};"))?,
                _ => return self.err(&format!("unknown entity &{ent};")),
            };
            out.push(c);
            rest = &rest[p + end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn parse_xml(s: &str) -> Result<El, String> {
    let mut r = Reader { s, i: 0 };
    r.skip_misc(true)?;
    let root = r.element()?;
    r.skip_misc(false)?;
    if !r.rest().is_empty() {
        return r.err("content after the root element");
    }
    Ok(root)
}

fn read_xml(path: &Path) -> El {
    let text = std::fs::read_to_string(path).unwrap();
    parse_xml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn xml_reader_refuses_what_simplexml_refuses() {
    let root = parse_xml(
        "<?xml version='1.0'?><!-- c --><a x=\"1 &amp; 2\"><b>t&lt;</b><![CDATA[<&>]]></a>",
    )
    .unwrap();
    assert_eq!(root.attr("x"), Some("1 & 2"));
    assert_eq!(root.field("b"), "t<");
    assert_eq!(root.text(), "<&>");
    for bad in [
        "<a><b></a>",
        "<a x=1/>",
        "<a x='1' x='2'/>",
        "<a>&nbsp;</a>",
        "<a>1 & 2</a>",
        "<a></a><b/>",
        "<a>",
        "<a x='<'/>",
    ] {
        assert!(parse_xml(bad).is_err(), "{bad} was accepted");
    }
}

// ---------------------------------------------------------------------------------------------
// The template and what the Docker manager makes of it.

fn template() -> El {
    read_xml(&repo().join("packaging/unraid/wormfs.xml"))
}

/// One <Config> as the Docker manager reads it (xmlToVar): the value is the element's text, or
/// the Default when empty; a Path's Mode outside its list becomes rw, a Port's tcp.
#[derive(Debug, Clone)]
struct Cfg {
    name: String,
    target: String,
    default: String,
    value: String,
    mode: String,
    ty: String,
}

fn configs(t: &El) -> Vec<Cfg> {
    t.elements("Config")
        .map(|c| {
            let a = |k: &str| c.attr(k).unwrap_or_default().to_owned();
            let ty = a("Type");
            let mut mode = a("Mode");
            match ty.as_str() {
                "Path"
                    if !["rw", "rw,slave", "rw,shared", "ro", "ro,slave", "ro,shared"]
                        .contains(&mode.to_lowercase().as_str()) =>
                {
                    mode = "rw".into()
                }
                "Port" if !["tcp", "udp"].contains(&mode.to_lowercase().as_str()) => {
                    mode = "tcp".into()
                }
                _ => {}
            }
            let text = c.text();
            Cfg {
                name: a("Name"),
                target: a("Target"),
                default: a("Default"),
                value: if text.is_empty() { a("Default") } else { text },
                mode,
                ty,
            }
        })
        .collect()
}

/// The arguments of the `docker create` the Docker manager runs for template `t`
/// (dynamix.docker.manager/include/Helpers.php, xmlToCommand): name, network, the pids limit,
/// the variables it adds (TZ, HOST_OS, HOST_HOSTNAME, HOST_CONTAINERNAME) and the template's,
/// its labels, each Config by Type (Path -v HOST:TARGET:MODE, Port -p HOST:TARGET/MODE on a
/// bridge or a TCP_PORT_N variable on the host network, Variable -e), then ExtraParams, the
/// repository and PostArgs. `network_driver` is the driver of `network` (Docker's).
fn docker_create_args(
    t: &El,
    cfgs: &[Cfg],
    name: &str,
    network: &str,
    network_driver: &str,
) -> Vec<String> {
    let extra = t.field("ExtraParams");
    let mut args: Vec<String> = vec!["create".into(), format!("--name={name}")];
    args.push(format!("--net={}", network.to_lowercase()));
    if !extra.contains("--pids-limit") {
        args.extend(["--pids-limit".into(), "2048".into()]);
    }
    if t.field("Privileged").eq_ignore_ascii_case("true") {
        args.push("--privileged=true".into());
    }
    let mut env = vec![
        "TZ=Etc/UTC".to_owned(),
        "HOST_OS=Unraid".into(),
        "HOST_HOSTNAME=Tower".into(),
        format!("HOST_CONTAINERNAME={}", t.field("Name")),
    ];
    let mut ports = Vec::new();
    let mut volumes = Vec::new();
    for c in cfgs {
        if c.target.is_empty() {
            continue;
        }
        match c.ty.to_lowercase().as_str() {
            "path" if !c.value.trim().is_empty() => {
                volumes.push(format!("{}:{}:{}", c.value, c.target, c.mode))
            }
            "port" => match network_driver {
                "host" | "macvlan" | "ipvlan" => {
                    env.push(format!("{}_PORT_{}={}", c.mode, c.target, c.value).to_uppercase())
                }
                "bridge" => ports.push(format!("{}:{}/{}", c.value, c.target, c.mode)),
                _ => {}
            },
            "variable" => env.push(format!("{}={}", c.target, c.value)),
            _ => {}
        }
    }
    for e in env {
        args.extend(["-e".into(), e]);
    }
    let mut labels = vec!["net.unraid.docker.managed=dockerman".to_owned()];
    labels.push(format!("net.unraid.docker.webui={}", t.field("WebUI")));
    labels.push(format!("net.unraid.docker.icon={}", t.field("Icon")));
    for l in labels {
        args.extend(["-l".into(), l]);
    }
    for p in ports {
        args.extend(["-p".into(), p]);
    }
    for v in volumes {
        args.extend(["-v".into(), v]);
    }
    // The shell splits ExtraParams and PostArgs (they are not quoted in the command line).
    args.extend(extra.split_whitespace().map(str::to_owned));
    args.push(t.field("Repository"));
    args.extend(t.field("PostArgs").split_whitespace().map(str::to_owned));
    args
}

fn is_url(s: &str) -> bool {
    s.starts_with("https://") && !s.contains(char::is_whitespace) && s.len() > 12
}

#[test]
fn ca_template_has_every_field_ca_and_the_docker_manager_read() {
    let t = template();
    assert_eq!(t.name, "Container");
    assert_eq!(t.attr("version"), Some("2"));
    // The fields CA shows and the Docker manager turns into the container.
    for f in [
        "Name",
        "Repository",
        "Registry",
        "Network",
        "Privileged",
        "Support",
        "Project",
        "Overview",
        "Category",
        "WebUI",
        "TemplateURL",
        "Icon",
        "ExtraParams",
    ] {
        assert!(!t.field(f).trim().is_empty(), "<{f}> is empty");
    }
    for f in ["PostArgs", "CPUset", "MyIP"] {
        assert!(
            t.child(f).is_some(),
            "<{f}/> is missing (the Docker manager reads it)"
        );
    }
    let name = t.field("Name");
    assert!(
        !name.contains(char::is_whitespace),
        "the Docker manager strips spaces from {name}"
    );
    assert_eq!(t.field("Repository"), "ghcr.io/wormfs/wormfs:latest");
    assert_eq!(t.field("Network"), "host");
    assert_eq!(t.field("Privileged"), "false");
    for f in ["Registry", "Support", "Project", "TemplateURL", "Icon"] {
        assert!(
            is_url(&t.field(f)),
            "<{f}> is not an https URL: {}",
            t.field(f)
        );
    }
    assert!(t.field("Icon").ends_with(".png"));
    assert!(
        t.field("Overview").contains("/mnt/user"),
        "the overview warns about /mnt/user"
    );
    for cat in t.field("Category").split_whitespace() {
        let (main, sub) = cat
            .split_once(':')
            .unwrap_or_else(|| panic!("category {cat} has no `:`"));
        assert!(
            !main.is_empty()
                && main.chars().all(char::is_alphabetic)
                && sub.chars().all(char::is_alphabetic),
            "category {cat}"
        );
    }
    assert_eq!(t.field("WebUI"), "http://[IP]:[PORT:7710]/");
    let extra = t.field("ExtraParams");
    assert!(extra.contains("--user 99:100"), "{extra}");
    assert!(extra.contains("--stop-timeout 60"), "{extra}");

    // Every Config carries every attribute the Docker manager's form reads, well formed.
    for c in t.elements("Config") {
        for a in [
            "Name",
            "Target",
            "Default",
            "Mode",
            "Description",
            "Type",
            "Display",
            "Required",
            "Mask",
        ] {
            assert!(
                c.attr(a).is_some(),
                "Config {:?} has no {a}",
                c.attr("Name")
            );
        }
        let a = |k: &str| c.attr(k).unwrap();
        assert!(["Path", "Port", "Variable", "Label", "Device"].contains(&a("Type")));
        assert!(["always", "always-hide", "advanced", "advanced-hide"].contains(&a("Display")));
        assert!(["true", "false"].contains(&a("Required")));
        assert!(["true", "false"].contains(&a("Mask")));
        assert!(!a("Name").is_empty() && !a("Description").is_empty());
        assert_eq!(
            c.text(),
            a("Default"),
            "Config {}: its value is its default",
            a("Name")
        );
        match a("Type") {
            "Path" => {
                assert!(a("Target").starts_with('/'));
                assert!(
                    ["rw", "rw,slave", "rw,shared", "ro", "ro,slave", "ro,shared"]
                        .contains(&a("Mode"))
                );
                assert!(a("Default").starts_with("/mnt/"));
                assert!(
                    !a("Default").starts_with("/mnt/user"),
                    "{}: /mnt/user is the FUSE union, never a WormFS path",
                    a("Name")
                );
            }
            "Port" => {
                assert!(a("Target").parse::<u16>().is_ok_and(|p| p > 0));
                assert!(a("Default").parse::<u16>().is_ok_and(|p| p > 0));
                assert!(["tcp", "udp"].contains(&a("Mode")));
            }
            "Variable" => {
                let v = a("Target");
                assert!(
                    v.starts_with(|ch: char| ch.is_ascii_uppercase())
                        && v.chars()
                            .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_'),
                    "variable {v}"
                );
            }
            _ => {}
        }
    }
    let cfgs = configs(&t);
    let names: BTreeSet<&str> = cfgs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cfgs.len(), "two Configs share a name");
    let paths: BTreeMap<&str, &str> = cfgs
        .iter()
        .filter(|c| c.ty == "Path")
        .map(|c| (c.target.as_str(), c.default.as_str()))
        .collect();
    assert_eq!(
        paths,
        BTreeMap::from([
            ("/data", "/mnt/cache/appdata/wormfs"),
            ("/disks/disk1", "/mnt/disk1/wormfs"),
            ("/disks/disk2", "/mnt/disk2/wormfs"),
            ("/disks/disk3", "/mnt/disk3/wormfs"),
        ])
    );
    let ports: BTreeSet<&str> = cfgs
        .iter()
        .filter(|c| c.ty == "Port")
        .map(|c| c.target.as_str())
        .collect();
    assert_eq!(ports, BTreeSet::from(["7710", "7711", "7712", "7713"]));
    let vars: BTreeSet<&str> = cfgs
        .iter()
        .filter(|c| c.ty == "Variable")
        .map(|c| c.target.as_str())
        .collect();
    for v in ["WORMFS_DISCOVERY__MDNS", "WORMFS_CLUSTER__PEERS"] {
        assert!(vars.contains(v), "no {v}");
    }

    // On the host network (the template's), the Docker manager publishes no port and passes
    // each as a TCP_PORT_N variable; the user and stop timeout come from ExtraParams.
    let args = docker_create_args(&t, &cfgs, &name, "host", "host");
    let line = args.join(" ");
    assert!(line.contains("--net=host"), "{line}");
    assert!(!args.iter().any(|a| a == "-p"), "{line}");
    assert!(line.contains("-e TCP_PORT_7710=7710"), "{line}");
    assert!(
        line.contains("-v /mnt/disk2/wormfs:/disks/disk2:rw"),
        "{line}"
    );
    assert!(
        line.ends_with("--user 99:100 --stop-timeout 60 ghcr.io/wormfs/wormfs:latest"),
        "{line}"
    );

    let profile = read_xml(&repo().join("packaging/unraid/ca_profile.xml"));
    assert_eq!(profile.name, "Maintainer");
    for f in ["Icon", "Profile", "WebPage"] {
        assert!(
            !profile.field(f).trim().is_empty(),
            "ca_profile.xml: <{f}> is empty"
        );
    }
    assert!(is_url(&profile.field("Icon")) && is_url(&profile.field("WebPage")));
}

#[test]
fn ca_template_docker_run_line_starts_a_healthy_node() {
    let image = image();
    let latest = image.rsplit_once(':').unwrap().0.to_owned() + ":latest";
    docker(&["image", "inspect", &latest]);
    let t = template();
    assert_eq!(t.field("Repository"), latest);

    // What a user fills in: the paths (folders owned by nobody:users, 99:100, as Unraid makes
    // shares), free host ports; mDNS off (a test never multicasts). The network is a bridge of
    // the test's own instead of the host's.
    let tmp = temp_dir();
    let mut cfgs = configs(&t);
    let mut ports = BTreeMap::new();
    for c in &mut cfgs {
        match c.ty.as_str() {
            "Path" => {
                let dir = tmp
                    .path()
                    .join(c.target.trim_start_matches('/').replace('/', "-"));
                std::fs::create_dir_all(&dir).unwrap();
                ok(Command::new("chown").arg("99:100").arg(&dir));
                c.value = dir.display().to_string();
            }
            "Port" => {
                let p = TcpListener::bind("0.0.0.0:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                ports.insert(c.target.clone(), p);
                c.value = p.to_string();
            }
            "Variable" if c.target == "WORMFS_DISCOVERY__MDNS" => c.value = "false".into(),
            _ => {}
        }
    }
    let net = Network::create(false);
    let name = unique("unraid");
    let container = Container(name.clone());
    let args = docker_create_args(&t, &cfgs, &name, &net.0, "bridge");
    assert!(args.contains(&"--user".to_owned()));
    assert_eq!(args.iter().filter(|a| *a == "-p").count(), 4);
    assert_eq!(args.iter().filter(|a| *a == "-v").count(), 4);
    eprintln!("docker {}", args.join(" "));
    ok(Command::new("docker").args(&args));
    docker(&["start", &name]);
    let inspect = |f: &str| docker(&["inspect", "-f", f, &container.0]);
    assert_eq!(inspect("{{.Config.User}}"), "99:100");
    assert_eq!(inspect("{{.Config.StopTimeout}}"), "60");
    assert_eq!(
        inspect("{{index .Config.Labels \"net.unraid.docker.webui\"}}"),
        "http://[IP]:[PORT:7710]/"
    );
    // The image's health check, `wormfs healthcheck --container`.
    wait_healthy(&container.0, 180);
    let api = ports["7710"];
    let code = http_code(&[&format!("http://127.0.0.1:{api}/")]);
    assert_eq!(code, "200", "the WebUI (admin page) on the published 7710");
    // The node wrote as 99:100 into the appdata folder.
    let appdata = cfgs.iter().find(|c| c.target == "/data").unwrap();
    let admin = Path::new(&appdata.value).join("webdav-admin.txt");
    assert!(admin.is_file(), "{} is missing", admin.display());
    let meta = std::fs::metadata(&admin).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            std::os::unix::fs::MetadataExt::gid(&meta)
        ),
        (99, 100)
    );
}

// ---------------------------------------------------------------------------------------------
// The plugin.

/// An HTTP server on 127.0.0.1 serving the files of `dir` (GET /NAME), counting requests.
fn serve_dir(dir: PathBuf) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map_or(true, |n| n == 0) || h.trim().is_empty() {
                    break;
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/');
            let file = dir.join(path.rsplit('/').next().unwrap_or_default());
            match std::fs::read(&file) {
                Ok(body) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/gzip\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(&body);
                }
                Err(_) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        }
    });
    (port, hits)
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Unraid-like mount points inside the chroot: each (host folder, chroot path) is bind-mounted.
type Binds = Vec<(PathBuf, &'static str)>;

/// Runs `script` with bash in the chroot at `root`, as root, in a private mount namespace with
/// /proc and the `binds` mounted (gone when its last process ends), with a clean environment.
/// A node started by it keeps that namespace.
fn in_chroot(root: &Path, binds: &Binds, script: &str) -> Output {
    let mut mounts = format!("mount -t proc proc '{}/proc'\n", root.display());
    for (src, dst) in binds {
        mounts.push_str(&format!(
            "mount --bind '{}' '{}{dst}'\n",
            src.display(),
            root.display()
        ));
    }
    run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "--", "bash", "-c"])
        .arg(format!(
            "set -e\n{mounts}exec chroot '{}' /usr/bin/env -i \
             PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
             /bin/bash -c \"$0\"",
            root.display()
        ))
        .arg(script))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Unraid's plugin manager (dynamix.plugin.manager/scripts/plugin, `plugin()`), run against the
/// chroot: the FILE elements of `method` in order; a Name whose file exists is kept if its
/// SHA256 matches (else deleted and fetched again); a new one is copied from LOCAL, written from
/// INLINE (trimmed, with a newline) or downloaded from URL (wget there, curl here) and checked
/// against its SHA256 (a mismatch is deleted and fails the install); Mode is applied; Run runs
/// the Name, or the INLINE as /tmp/inlineN-PLUGIN.sh, and a non-zero exit fails.
fn plugin_manager(method: &str, plg: &Path, root: &Path, binds: &Binds) -> Result<String, String> {
    let xml = read_xml(plg);
    let mut log = String::new();
    let stem = plg.file_stem().unwrap().to_string_lossy().into_owned();
    for (n, file) in xml.elements("FILE").enumerate() {
        let methods = file.attr("Method").unwrap_or("install");
        if !methods.split(' ').any(|m| m == method) {
            continue;
        }
        let name = file.attr("Name").unwrap_or_default();
        if !name.is_empty() {
            let host = root.join(name.trim_start_matches('/'));
            std::fs::create_dir_all(host.parent().unwrap()).unwrap();
            let sha = file.child("SHA256").map(|s| s.text().trim().to_owned());
            if host.exists() {
                if let Some(sha) = &sha {
                    if &sha256_file(&host) != sha {
                        std::fs::remove_file(&host).unwrap();
                    }
                }
            }
            if host.exists() {
                log.push_str(&format!("skipping: {name} already exists\n"));
            } else if let Some(inline) = file.child("INLINE") {
                std::fs::write(&host, format!("{}\n", inline.text().trim())).unwrap();
                log.push_str(&format!("creating: {name} - from INLINE content\n"));
            } else if let Some(url) = file.child("URL") {
                let url = url.text().trim().to_owned();
                let out = run(Command::new("curl")
                    .args(["-fsS", "--max-time", "60", "-o"])
                    .arg(&host)
                    .arg(&url));
                if !out.status.success() {
                    let _ = std::fs::remove_file(&host);
                    return Err(format!("{url} download failure: {}", text(&out)));
                }
                log.push_str(&format!("creating: {name} - downloading from URL {url}\n"));
                if let Some(sha) = &sha {
                    if &sha256_file(&host) != sha {
                        std::fs::remove_file(&host).unwrap();
                        return Err(format!("bad file SHA256: {name}"));
                    }
                }
            }
            if let Some(mode) = file.attr("Mode") {
                let mode = u32::from_str_radix(mode, 8).unwrap();
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        if let Some(command) = file.attr("Run") {
            let target = if !name.is_empty() {
                name.to_owned()
            } else {
                let path = format!("/tmp/inline{}-{stem}.sh", n + 1);
                std::fs::write(
                    root.join(path.trim_start_matches('/')),
                    file.child("INLINE").unwrap().text(),
                )
                .unwrap();
                path
            };
            let out = in_chroot(root, binds, &format!("{command} {target}"));
            log.push_str(&text(&out));
            if name.is_empty() {
                let _ = std::fs::remove_file(root.join(target.trim_start_matches('/')));
            }
            if !out.status.success() {
                return Err(format!(
                    "run failed: '{command}' returned {}\n{log}",
                    out.status
                ));
            }
        }
    }
    Ok(log)
}

/// Every path in the tree (not following links), /proc's content and /tmp left out.
fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if rel == "proc" || rel == "tmp" {
                continue;
            }
            let is_dir = e.file_type().unwrap().is_dir();
            out.insert(rel);
            if is_dir {
                walk(root, &e.path(), out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// Kills the plugin's node (its pid file in the chroot) if a test ends with it running.
struct NodeGuard(PathBuf);

impl Drop for NodeGuard {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("run/wormfs.pid")) {
            let _ = run(Command::new("kill").args(["-KILL", pid.trim()]));
        }
    }
}

/// Whether process `pid` runs (a zombie does not: this machine's init may not reap it).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        !s.lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    })
}

#[test]
fn plugin_installs_starts_stops_and_removes_in_a_debootstrap_chroot() {
    let binary = packaged_binary();
    let base = rootfs();
    let tmp = temp_dir();
    let root = tmp.path().join("root");
    ok(Command::new("cp").arg("-a").arg(&base).arg(&root));
    let _node = NodeGuard(root.clone());

    // The plugin, with its tarball served from 127.0.0.1.
    let dist = tmp.path().join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    let (port, hits) = serve_dir(dist.clone());
    let plg = PathBuf::from(ok(Command::new("bash")
        .arg(repo().join("packaging/unraid/build-plg.sh"))
        .arg("--binary")
        .arg(&binary)
        .arg("--out")
        .arg(&dist)
        .arg("--base-url")
        .arg(format!("http://127.0.0.1:{port}/releases"))));
    let version = workspace_version();
    let tarball_name = format!("wormfs-{version}-x86_64.tar.gz");
    let xml = read_xml(&plg);
    assert_eq!(xml.name, "PLUGIN");
    assert_eq!(xml.attr("name"), Some("wormfs"));
    assert_eq!(xml.attr("version"), Some(version.as_str()));
    assert!(xml.attr("author").is_some_and(|a| !a.is_empty()));
    assert!(xml.attr("pluginURL").is_some_and(is_url));
    assert!(xml.attr("min").is_some());
    let download = xml
        .elements("FILE")
        .find(|f| f.child("URL").is_some())
        .expect("a FILE with a URL");
    assert_eq!(
        download.attr("Name"),
        Some(format!("/boot/config/plugins/wormfs/{tarball_name}").as_str())
    );
    let sha = download.field("SHA256");
    assert_eq!(
        sha,
        sha256_file(&dist.join(&tarball_name)),
        "the .plg carries the tarball's SHA-256"
    );
    assert!(xml
        .elements("FILE")
        .any(|f| f.attr("Method") == Some("remove")));

    // Unraid's mount points: a pool and three array disks, each a mounted file system (bind
    // mounts of folders of the test, in the chroot's private mount namespace).
    let mut binds: Binds = Vec::new();
    for (host, at) in [
        ("cache", "/mnt/cache"),
        ("disk1", "/mnt/disk1"),
        ("disk2", "/mnt/disk2"),
        ("disk3", "/mnt/disk3"),
    ] {
        let src = tmp.path().join("mounts").join(host);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(root.join(at.trim_start_matches('/'))).unwrap();
        binds.push((src, at));
    }
    // What Unraid has before any plugin: /etc/rc.d (Slackware), the webGUI's plugin folder,
    // the flash's plugin folder.
    for d in [
        "etc/rc.d",
        "usr/local/emhttp/plugins",
        "boot/config/plugins",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let before = tree(&root);

    // A wrong SHA-256 is refused: the download is deleted and nothing is installed.
    let bad = tmp.path().join("bad/wormfs.plg");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(
        &bad,
        std::fs::read_to_string(&plg)
            .unwrap()
            .replace(&sha, &"0".repeat(64)),
    )
    .unwrap();
    let err = plugin_manager("install", &bad, &root, &binds).expect_err("a wrong SHA-256 installs");
    assert!(err.contains("bad file SHA256"), "{err}");
    assert!(!root
        .join("boot/config/plugins/wormfs")
        .join(&tarball_name)
        .exists());
    assert!(!root.join("usr/local/emhttp/plugins/wormfs").exists());
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Install: the files where Unraid expects them, wormfs on PATH, the config written once.
    let log =
        plugin_manager("install", &plg, &root, &binds).unwrap_or_else(|e| panic!("install: {e}"));
    assert!(
        log.contains(&format!("wormfs {version} installed")),
        "{log}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let plugdir = root.join("usr/local/emhttp/plugins/wormfs");
    for (f, mode) in [
        ("bin/wormfs", 0o755),
        ("rc.wormfs", 0o755),
        ("event/disks_mounted", 0o755),
        ("event/stopping_svcs", 0o755),
    ] {
        let m = std::fs::metadata(plugdir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(m.permissions().mode() & 0o777, mode, "{f}");
    }
    assert_eq!(
        std::fs::read(plugdir.join("bin/wormfs")).unwrap(),
        std::fs::read(&binary).unwrap(),
        "the installed binary is the packaged one"
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/rc.d/rc.wormfs")).unwrap(),
        Path::new("/usr/local/emhttp/plugins/wormfs/rc.wormfs")
    );
    assert_eq!(
        std::fs::read_link(root.join("usr/local/bin/wormfs")).unwrap(),
        Path::new("/usr/local/emhttp/plugins/wormfs/bin/wormfs")
    );
    let on_path = in_chroot(&root, &binds, "command -v wormfs && wormfs --version");
    assert!(on_path.status.success(), "{}", text(&on_path));
    assert!(
        text(&on_path).starts_with("/usr/local/bin/wormfs\n"),
        "{}",
        text(&on_path)
    );
    let config = root.join("boot/config/plugins/wormfs/wormfs.toml");
    let default_config = std::fs::read_to_string(&config).expect("the install wrote wormfs.toml");
    assert!(
        !root.join("run/wormfs.pid").exists(),
        "no array started: the node waits for disks_mounted"
    );
    assert!(std::fs::read_dir(root.join("tmp")).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("inline")));

    // The next boot installs it again from the flash, without a download, keeping the config.
    std::fs::write(&config, format!("{default_config}\n# edited\n")).unwrap();
    plugin_manager("install", &plg, &root, &binds).unwrap_or_else(|e| panic!("reinstall: {e}"));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "the tarball on the flash was reused"
    );
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .ends_with("# edited\n"));

    // Paths the rc script refuses before starting anything: /mnt/user (the FUSE union), and a
    // disk folder that was not made on the mounted disk.
    let free = || {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (api, webdav, peer, data) = (free(), free(), free(), free());
    let mut cfg = default_config.clone();
    for (from, to) in [
        (
            "listen = \"0.0.0.0:7710\"",
            format!("listen = \"127.0.0.1:{api}\""),
        ),
        (
            "listen = \"0.0.0.0:7711\"",
            format!("listen = \"127.0.0.1:{webdav}\""),
        ),
        (
            "peer_listen = \"0.0.0.0:7712\"",
            format!("peer_listen = \"127.0.0.1:{peer}\""),
        ),
        (
            "data_listen = \"0.0.0.0:7713\"",
            format!("data_listen = \"127.0.0.1:{data}\""),
        ),
        ("mdns = true", "mdns = false".to_owned()),
    ] {
        assert!(cfg.contains(from), "the default config has {from}");
        cfg = cfg.replace(from, &to);
    }
    for (disks, says) in [
        ("disks = [\"/mnt/user/wormfs\"]", "FUSE union"),
        (
            "disks = [\"/mnt/disk1/wormfs\", \"/mnt/disk4/wormfs\"]",
            "/mnt/disk4/wormfs does not exist",
        ),
    ] {
        let mut wrong = cfg.clone();
        let line = cfg.lines().find(|l| l.starts_with("disks = ")).unwrap();
        wrong = wrong.replace(line, disks);
        std::fs::write(&config, &wrong).unwrap();
        let out = in_chroot(&root, &binds, "/etc/rc.d/rc.wormfs start");
        assert!(!out.status.success(), "started with {disks}");
        assert!(
            text(&out).contains(says) && text(&out).contains("not started"),
            "{}",
            text(&out)
        );
        assert!(!root.join("run/wormfs.pid").exists());
    }
    std::fs::write(&config, &cfg).unwrap();
    for (src, _) in binds.iter().skip(1) {
        std::fs::create_dir_all(src.join("wormfs")).unwrap();
        ok(Command::new("chown").arg("99:100").arg(src.join("wormfs")));
    }

    // disks_mounted: the node starts, as nobody:users, and answers its health check.
    let out = in_chroot(
        &root,
        &binds,
        "/usr/local/emhttp/plugins/wormfs/event/disks_mounted",
    );
    assert!(
        out.status.success() && text(&out).contains("started (pid"),
        "{}",
        text(&out)
    );
    let pid = std::fs::read_to_string(root.join("run/wormfs.pid"))
        .unwrap()
        .trim()
        .to_owned();
    let health = wait_for(
        90,
        "the plugin's node to answer `wormfs healthcheck`",
        || {
            assert!(
                alive(&pid),
                "the node exited: {}",
                std::fs::read_to_string(root.join("var/log/wormfs.log")).unwrap_or_default()
            );
            let out = in_chroot(
                &root,
                &Vec::new(),
                &format!(
                    "wormfs healthcheck --container --timeout 3 --node http://127.0.0.1:{api}"
                ),
            );
            out.status.success().then(|| text(&out))
        },
    );
    assert!(
        health.starts_with("healthy") || health.starts_with("degraded"),
        "{health}"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t99\t")),
        "{status}"
    );
    assert!(
        status.lines().any(|l| l.starts_with("Gid:\t100\t")),
        "{status}"
    );
    let appdata = binds[0].0.join("appdata/wormfs");
    assert!(
        appdata.join("webdav-admin.txt").is_file(),
        "the data folder is on the pool"
    );
    let out = in_chroot(
        &root,
        &binds,
        "/usr/local/emhttp/plugins/wormfs/event/disks_mounted",
    );
    assert!(text(&out).contains("already running"), "{}", text(&out));

    // stopping_svcs: it stops on SIGTERM, within the rc script's bound, before it returns.
    let out = in_chroot(
        &root,
        &Vec::new(),
        "/usr/local/emhttp/plugins/wormfs/event/stopping_svcs",
    );
    let said = text(&out);
    assert!(out.status.success() && said.contains("stopped"), "{said}");
    assert!(!said.contains("SIGKILL"), "the node needed SIGKILL: {said}");
    assert!(!alive(&pid), "the node still runs after stopping_svcs");
    assert!(!root.join("run/wormfs.pid").exists());

    // Remove: everything gone but /boot/config/plugins/wormfs/wormfs.toml (and the data).
    let log =
        plugin_manager("remove", &plg, &root, &binds).unwrap_or_else(|e| panic!("remove: {e}"));
    assert!(log.contains("wormfs removed"), "{log}");
    let after = tree(&root);
    let added: Vec<&String> = after.difference(&before).collect();
    let removed: Vec<&String> = before.difference(&after).collect();
    assert!(
        removed.is_empty(),
        "the plugin removed files it did not bring: {removed:?}"
    );
    let kept = [
        "boot/config/plugins/wormfs",
        "boot/config/plugins/wormfs/wormfs.toml",
    ];
    assert!(
        added.iter().all(|p| kept.contains(&p.as_str())),
        "left behind: {added:?}"
    );
    assert!(config.is_file());
    assert!(appdata.join("webdav-admin.txt").is_file(), "the data stays");
}
