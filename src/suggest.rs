//! "Did you mean": the names closest to a mistyped one, by edit distance.
//! Shared by the master (its not-found errors) and anything else that
//! looks a name up.

/// Up to three of `candidates` close to `name` (edit distance at most a
/// third of the longer name, at least 1, or `name` a prefix of it), the
/// closest first.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter(|c| *c != name)
        .filter_map(|c| {
            let d = distance(name, c);
            let limit = (name.chars().count().max(c.chars().count()) / 3).max(1);
            (d <= limit || (name.len() >= 2 && c.starts_with(name))).then_some((d, c))
        })
        .collect();
    scored.sort();
    scored.dedup();
    scored.into_iter().take(3).map(|(_, c)| c).collect()
}

/// `` (did you mean `a` or `b`?)`` for the closest names, or nothing.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let found = closest(name, candidates);
    match found.as_slice() {
        [] => String::new(),
        [one] => format!(" (did you mean `{one}`?)"),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(|n| format!("`{n}`")).collect();
            format!(" (did you mean {} or `{last}`?)", init.join(", "))
        }
    }
}

/// Edit distance by characters, a swap of two neighbours counting as one
/// edit (optimal string alignment): `hodl` is one edit from `hold`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_suggested_far_ones_not() {
        let names = ["unit", "integration", "deploy", "docs"];
        assert_eq!(closest("unti", names), vec!["unit"]);
        assert_eq!(closest("dpeloy", names), vec!["deploy"]);
        assert_eq!(closest("zzz", names), Vec::<&str>::new());
        assert_eq!(closest("integ", names), vec!["integration"]);
        assert_eq!(did_you_mean("unti", names), " (did you mean `unit`?)");
        assert_eq!(
            did_you_mean("doc", ["docs", "dock"]),
            " (did you mean `dock` or `docs`?)"
        );
        assert_eq!(did_you_mean("zzz", names), "");
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("hodl", "hold"), 1);
        assert_eq!(closest("hodl", ["hold", "quick"]), vec!["hold"]);
    }
}
