//! Plex's calls: `GET /library/sections` (the libraries and their folders, as JSON with
//! `Accept: application/json`; Plex answers XML otherwise) and
//! `GET /library/sections/{id}/refresh?path=...` (a scan of one folder of that library). Both
//! send the token as `X-Plex-Token`.

use serde::Deserialize;

use super::path_map::server_path_under;
use super::{check_answer, Failure};

/// The header Plex reads its token from.
const TOKEN_HEADER: &str = "X-Plex-Token";

/// One library section: its id (`key`), its title and its folders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// The id used in `/library/sections/{id}/refresh`.
    pub key: String,
    /// Its name in Plex.
    pub title: String,
    /// Its folders, as Plex sees them.
    pub locations: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(rename = "MediaContainer")]
    container: Container,
}

#[derive(Debug, Deserialize)]
struct Container {
    /// Left out by Plex when there is no library.
    #[serde(rename = "Directory", default)]
    directories: Vec<Directory>,
}

#[derive(Debug, Deserialize)]
struct Directory {
    /// A string in Plex's answers (`"1"`); a number is taken too.
    key: serde_json::Value,
    #[serde(default)]
    title: String,
    #[serde(rename = "Location", default)]
    locations: Vec<Location>,
}

#[derive(Debug, Deserialize)]
struct Location {
    path: String,
}

/// Reads `GET /library/sections`'s JSON.
fn parse_sections(body: &str) -> Result<Vec<Section>, String> {
    let answer: Answer = serde_json::from_str(body).map_err(|e| e.to_string())?;
    answer
        .container
        .directories
        .into_iter()
        .map(|d| {
            let key = match &d.key {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                other => return Err(format!("a section's key is {other}")),
            };
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!("a section's key is {key:?}"));
            }
            Ok(Section {
                key,
                title: d.title,
                locations: d.locations.into_iter().map(|l| l.path).collect(),
            })
        })
        .collect()
}

/// `GET /library/sections`: the status and the libraries.
pub async fn sections(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> Result<(u16, Vec<Section>), Failure> {
    let answer = http
        .get(format!("{base}/library/sections"))
        .header(TOKEN_HEADER, token)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(Failure::from_request)?;
    let (status, body) = check_answer(answer).await?;
    let sections = parse_sections(&body).map_err(|e| {
        Failure::Permanent(format!(
            "GET /library/sections answered {status} but not with Plex's JSON ({e}); is this \
             Plex's address?"
        ))
    })?;
    Ok((status, sections))
}

/// The section whose folder holds `folder` (the longest such folder, when libraries nest).
pub fn section_for<'a>(sections: &'a [Section], folder: &str) -> Option<&'a Section> {
    sections
        .iter()
        .flat_map(|s| s.locations.iter().map(move |l| (s, l)))
        .filter(|(_, l)| server_path_under(folder, l))
        .max_by_key(|(_, l)| l.len())
        .map(|(s, _)| s)
}

/// Asks Plex to scan `folder` of section `key`; the answer's status on success.
pub async fn refresh(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
    folder: &str,
) -> Result<u16, Failure> {
    let answer = http
        .get(format!("{base}/library/sections/{key}/refresh"))
        .query(&[("path", folder)])
        .header(TOKEN_HEADER, token)
        .send()
        .await
        .map_err(Failure::from_request)?;
    check_answer(answer).await.map(|(status, _)| status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_read_from_plex_json_and_folders_go_to_the_deepest_location() {
        let body = r#"{"MediaContainer":{"size":3,"allowSync":false,"Directory":[
            {"allowSync":true,"key":"1","type":"movie","title":"Films","agent":"tv.plex.agents.movie",
             "Location":[{"id":1,"path":"/media/films"},{"id":4,"path":"/more/films"}]},
            {"key":"2","type":"show","title":"TV","Location":[{"id":2,"path":"/media/tv"}]},
            {"key":3,"type":"movie","title":"Kids","Location":[{"id":3,"path":"/media/films/kids/"}]}
        ]}}"#;
        let s = parse_sections(body).expect("parses");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].locations, vec!["/media/films", "/more/films"]);
        let key = |f: &str| section_for(&s, f).map(|s| s.key.as_str());
        assert_eq!(key("/media/films/A (2024)"), Some("1"));
        assert_eq!(key("/more/films"), Some("1"));
        assert_eq!(key("/media/films/kids/B"), Some("3"));
        assert_eq!(key("/media/tv/Show/Season 1"), Some("2"));
        assert_eq!(key("/media/tvshows/X"), None);
        assert_eq!(key("/elsewhere"), None);
    }

    #[test]
    fn no_library_and_bad_keys_are_read_as_such() {
        let none = parse_sections(r#"{"MediaContainer":{"size":0}}"#).expect("parses");
        assert!(none.is_empty());
        assert!(parse_sections(r#"{"MediaContainer":{"Directory":[{"key":"../x"}]}}"#).is_err());
        assert!(parse_sections("<MediaContainer/>").is_err());
    }
}
