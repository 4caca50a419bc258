//! The shape of `master.toml`: which keys each table takes and of which
//! TOML type, checked on the parsed document before serde sees it.
//!
//! serde stops at its first error, so an unknown key or a value of the
//! wrong type would hide every other problem. This walk reports all of
//! them (with a hint on how to write the value) and removes the offending
//! entries, so that deserializing what is left cannot fail and
//! [`super::validate`] still checks everything else. A required `name`
//! that is missing or mistyped is replaced by a placeholder (`#1`, the
//! entry's number) whose position is remembered, so that no second
//! problem is reported about the same name.

mod fields;
mod messages;
mod walker;

pub(super) use walker::walk;

#[cfg(test)]
mod tests {
    use super::fields::{Field, Kind, ROOT};

    /// The schema knows exactly the keys of `crate::man::CONFIG_KEYS`,
    /// which another test holds to the raw structs: so serde never sees a
    /// key the walk let through unchecked.
    #[test]
    fn schema_matches_the_documented_keys() {
        fn flatten(prefix: &str, fields: &[Field], out: &mut Vec<String>) {
            for field in fields {
                let key = if prefix.is_empty() {
                    field.key.to_owned()
                } else {
                    format!("{prefix}.{}", field.key)
                };
                out.push(key.clone());
                if let Kind::Table(inner) | Kind::Tables(inner) | Kind::StrOrTable(inner) =
                    field.kind
                {
                    flatten(&key, inner, out);
                }
            }
        }
        let mut found = Vec::new();
        flatten("", ROOT, &mut found);
        found.sort();
        let mut listed: Vec<String> = crate::man::CONFIG_KEYS
            .iter()
            .map(|k| k.to_string())
            .collect();
        listed.sort();
        assert_eq!(found, listed);
    }
}
