//! Man pages for the three programs, rendered from their clap definitions.
//!
//! The pages are checked in under `man/`; a test renders them again and
//! fails when they differ, so the pages can never drift from `--help`.
//! Regenerate with `UPDATE_MAN=1 cargo test --lib man`.

use clap::CommandFactory;

/// Every page as (file name, roff text): `bbctl.1`, one `bbctl-<cmd>.1`
/// per subcommand, `bbmaster.1` and `bbworker.1`.
pub fn render_all() -> Vec<(String, Vec<u8>)> {
    let mut pages = Vec::new();
    let bbctl = crate::client::cli::Cli::command();
    pages.push(("bbctl.1".to_string(), render(bbctl.clone())));
    for sub in bbctl.get_subcommands() {
        let name = format!("bbctl-{}", sub.get_name());
        let sub = sub.clone().name(name.clone());
        pages.push((format!("{name}.1"), render(sub)));
    }
    pages.push((
        "bbmaster.1".to_string(),
        render(crate::daemon::args::MasterArgs::command()),
    ));
    pages.push((
        "bbworker.1".to_string(),
        render(crate::worker::args::WorkerArgs::command()),
    ));
    pages
}

fn render(cmd: clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .expect("rendering into a Vec cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn man_pages_are_up_to_date() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
        let update = std::env::var_os("UPDATE_MAN").is_some();
        let mut stale = Vec::new();
        for (name, text) in super::render_all() {
            let path = dir.join(&name);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read(&path).ok().as_deref() != Some(&text[..]) {
                stale.push(name);
            }
        }
        assert!(
            stale.is_empty(),
            "man pages out of date: {stale:?}; run `UPDATE_MAN=1 cargo test --lib man` and commit man/"
        );
    }
}
