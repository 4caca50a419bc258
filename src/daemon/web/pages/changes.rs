//! `/changes`: the changes, newest first, paged, with the builds each
//! started.

use super::*;

/// The first line of a change's comments, cut to a length a table row
/// holds.
fn first_line(comments: Option<&str>) -> String {
    let line = comments.unwrap_or("").lines().next().unwrap_or("");
    match line.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// A revision as people read it: its first 12 characters.
fn short_revision(revision: &str) -> &str {
    match revision.char_indices().nth(12) {
        Some((i, _)) => &revision[..i],
        None => revision,
    }
}

fn changes_table(web: &Web, changes: &[ChangeInfo]) -> String {
    if changes.is_empty() {
        return "<p>No changes.</p>".into();
    }
    let p = esc(&web.prefix);
    let mut out = String::from(
        "<div class=\"wide\"><table id=\"changes\"><tr><th>change</th><th>repository</th>\
         <th>branch</th><th>revision</th><th>author</th><th>comments</th><th>when</th>\
         <th>builds</th></tr>",
    );
    for c in changes {
        let n = &c.change.new;
        let mut builds = String::new();
        for r in &c.requests {
            if r.builds.is_empty() {
                let _ = write!(
                    builds,
                    "<a href=\"{p}/builders/{}\">{}</a> r{} queued ",
                    url_segment(&r.builder),
                    esc(&r.builder),
                    r.request_id
                );
            }
            for b in &r.builds {
                let _ = write!(
                    builds,
                    "<a href=\"{p}/builds/{b}\" title=\"{}\">#{b}</a> ",
                    esc(&r.builder)
                );
            }
        }
        let _ = write!(
            out,
            "<tr id=\"change-{id}\"><td>{id}</td><td>{}</td><td>{}</td><td><code title=\"{}\">{}</code></td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&n.repository),
            esc(&n.branch),
            esc(&n.revision),
            esc(short_revision(&n.revision)),
            esc(n.author.as_deref().unwrap_or("")),
            esc(&first_line(n.comments.as_deref())),
            time(c.change.at_ms),
            builds.trim_end(),
            id = c.change.id,
        );
    }
    out.push_str("</table></div>");
    out
}

/// `GET /changes?offset=N`: the changes, newest first, with the builds
/// each started (paged).
pub async fn changes(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    render(&web, async {
        let who = who(&web, &headers)?;
        // One more than a page: whether there is a next one.
        let (offset, window) =
            crate::daemon::web::api::window(Some(CHANGES_PAGE + 1), q.offset, "changes")?;
        let list = match web.master.changes(&who, window).await? {
            Reply::Changes(c) => c,
            _ => Vec::new(),
        };
        let page: Vec<ChangeInfo> = list
            .into_iter()
            .skip(offset)
            .take(CHANGES_PAGE as usize + 1)
            .collect();
        let more = page.len() > CHANGES_PAGE as usize;
        let p = esc(&web.prefix);
        let mut body = changes_table(&web, &page[..page.len().min(CHANGES_PAGE as usize)]);
        if offset > 0 {
            let _ = write!(
                body,
                "<a href=\"{p}/changes?offset={}\">newer</a> ",
                offset.saturating_sub(CHANGES_PAGE as usize)
            );
        }
        if more {
            let _ = write!(
                body,
                "<a href=\"{p}/changes?offset={}\">older</a>",
                offset + CHANGES_PAGE as usize
            );
        }
        Ok(("changes".to_string(), body, String::new()))
    })
    .await
}
