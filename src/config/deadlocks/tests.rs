//! Waiting trigger steps that could never end, through the real parser:
//! refused configs name the builder, step and scheduler; configs that
//! deadlock only under load pass with a warning; the safe ones say nothing.

use std::path::Path;

use super::*;
use crate::config::parse_str;

/// Workers `w1` (max_builds 2, tag `big`) and `w2` (max_builds 1), a
/// `parent` builder whose step `fan` triggers scheduler `kids` (builders
/// `child`) and waits; `extra` is appended (locks, more builders).
fn config(parent: &str, child: &str, extra: &str) -> String {
    format!(
        r#"
[[worker]]
name = "w1"
local = true
max_builds = 2
tags = ["big"]

[[worker]]
name = "w2"
local = true
max_builds = 1

[[builder]]
name = "parent"
{parent}
  [[builder.step]]
  name = "fan"
  trigger = {{ schedulers = ["kids"], wait = true }}

[[builder]]
name = "child"
{child}
  [[builder.step]]
  name = "work"
  shell = "true"

[[scheduler]]
name = "kids"
kind = "triggerable"
builders = ["child"]
{extra}
"#
    )
}

fn refused(text: &str) -> String {
    match parse_str(text, "m.toml", Path::new("/")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn warnings(text: &str) -> Vec<String> {
    match parse_str(text, "m.toml", Path::new("/")) {
        Ok(c) => c.warnings,
        Err(e) => panic!("refused: {e}\n{text}"),
    }
}

#[test]
fn separate_workers_and_no_locks_say_nothing() {
    let text = config("workers = [\"w1\"]", "workers = [\"w2\"]", "");
    assert_eq!(warnings(&text), Vec::<String>::new());
}

#[test]
fn a_waiting_trigger_of_its_own_builder_is_a_cycle() {
    let text = config("workers = [\"w1\"]", "workers = [\"w2\"]", "").replace(
        "builders = [\"child\"]",
        "builders = [\"child\", \"parent\"]",
    );
    let e = refused(&text);
    assert!(
        e.contains("m.toml:")
            && e.contains("builder `parent`, step `fan`: waiting triggers form a cycle")
            && e.contains("`parent` (step `fan`) waits for `parent` through scheduler `kids`"),
        "{e}"
    );
}

#[test]
fn a_cycle_through_another_builder_is_refused_and_names_every_hop() {
    // child waits for scheduler `back`, which builds parent again.
    let text = config("workers = [\"w1\"]", "workers = [\"w2\"]", "").replace(
        "  name = \"work\"\n  shell = \"true\"",
        "  name = \"again\"\n  trigger = { schedulers = [\"back\"], wait = true }",
    ) + "\n[[scheduler]]\nname = \"back\"\nkind = \"triggerable\"\nbuilders = [\"parent\"]\n";
    let e = refused(&text);
    assert!(
        e.contains(
            "builder `parent`, step `fan`: waiting triggers form a cycle: `parent` (step `fan`) \
             waits for `child` through scheduler `kids`, `child` (step `again`) waits for \
             `parent` through scheduler `back`"
        ),
        "{e}"
    );
    assert!(e.contains("builder `child`, step `again`"), "{e}");
    // Without waiting it is a loop of builds, not a deadlock: accepted.
    let text = text.replace("wait = true", "wait = false");
    assert_eq!(warnings(&text), Vec::<String>::new());
}

#[test]
fn a_lock_held_exclusively_by_the_waiting_build_is_refused() {
    let lock = "\n[[lock]]\nname = \"rig\"\n";
    let text = config(
        "workers = [\"w1\"]\nlocks = [{ name = \"rig\", access = \"exclusive\" }]",
        "workers = [\"w2\"]\nlocks = [{ name = \"rig\", access = \"counting\" }]",
        lock,
    );
    let e = refused(&text);
    assert!(
        e.contains(
            "builder `parent`, step `fan`: while it waits for the builds it triggers, `parent` \
             (exclusive) holds lock `rig`; builder `child` (scheduler `kids`) needs it \
             (weight 1 of max 1, for the whole build) and can never get it"
        ),
        "{e}"
    );
    // Taken by a step of the child, it is the same.
    let text = config(
        "workers = [\"w1\"]\nlocks = [{ name = \"rig\", access = \"exclusive\" }]",
        "workers = [\"w2\"]",
        lock,
    )
    .replace(
        "  shell = \"true\"",
        "  shell = \"true\"\n  locks = [{ name = \"rig\", access = \"exclusive\" }]",
    );
    // A lock is claimed by builds or by steps, never both: refused for that.
    assert!(refused(&text).contains("rig"));
}

#[test]
fn a_counting_lock_needs_room_for_both() {
    let counting = |max: u32| {
        config(
            "workers = [\"w1\"]\nlocks = [{ name = \"db\", access = \"counting\", weight = 2 }]",
            "workers = [\"w2\"]\nlocks = [{ name = \"db\", access = \"counting\" }]",
            &format!("\n[[lock]]\nname = \"db\"\nmax = {max}\n"),
        )
    };
    let e = refused(&counting(2));
    assert!(
        e.contains("`parent` (weight 2 of max 2) holds lock `db`")
            && e.contains("needs it (weight 1 of max 2, for the whole build)"),
        "{e}"
    );
    assert_eq!(warnings(&counting(3)), Vec::<String>::new());
}

#[test]
fn the_trigger_steps_own_lock_counts_too() {
    let text = config(
        "workers = [\"w1\"]",
        "workers = [\"w2\"]\nlocks = [{ name = \"rig\", access = \"exclusive\" }]",
        "\n[[lock]]\nname = \"rig\"\n",
    )
    .replace(
        "wait = true }",
        "wait = true }\n  locks = [{ name = \"rig\", access = \"exclusive\" }]",
    );
    // `rig` is a build lock of child and a step lock of parent: refused
    // by the locks' own rule; with only step locks it is a deadlock.
    let text = text.replace(
        "workers = [\"w2\"]\nlocks = [{ name = \"rig\", access = \"exclusive\" }]",
        "workers = [\"w2\"]",
    );
    let text = text.replace(
        "  shell = \"true\"",
        "  shell = \"true\"\n  locks = [{ name = \"rig\", access = \"exclusive\" }]",
    );
    let e = refused(&text);
    assert!(
        e.contains("`parent` (exclusive) holds lock `rig`")
            && e.contains("needs it (exclusive, in step `work`)"),
        "{e}"
    );
}

#[test]
fn a_worker_scoped_lock_collides_only_on_the_one_worker_of_the_child() {
    let lock = "\n[[lock]]\nname = \"cpu\"\nscope = \"worker\"\n";
    let claim = "locks = [{ name = \"cpu\", access = \"exclusive\" }]";
    // Both pinned to w1: refused.
    let text = config(
        &format!("workers = [\"w1\"]\n{claim}"),
        &format!("workers = [\"w1\"]\n{claim}"),
        lock,
    );
    let e = refused(&text);
    assert!(e.contains("holds lock `cpu` on worker `w1`"), "{e}");
    // The parent may land elsewhere: a warning.
    let text = config(
        &format!("workers = [\"w1\", \"w2\"]\n{claim}"),
        &format!("workers = [\"w1\"]\n{claim}"),
        lock,
    );
    let w = warnings(&text);
    assert!(
        w.iter()
            .any(|w| w.contains("warning: builder `parent`, step `fan`")
                && w.contains("when they run on worker `w1`")),
        "{w:?}"
    );
    // The child may run on another worker: nothing to say of the lock.
    let text = config(
        &format!("workers = [\"w1\"]\n{claim}"),
        &format!("workers = [\"w1\", \"w2\"]\n{claim}"),
        lock,
    );
    assert!(
        warnings(&text).iter().all(|w| !w.contains("cpu")),
        "{:?}",
        warnings(&text)
    );
}

#[test]
fn one_slot_shared_by_the_waiting_build_and_its_child_is_refused() {
    let text = config("workers = [\"w2\"]", "workers = [\"w2\"]", "");
    let e = refused(&text);
    assert!(
        e.contains(
            "builder `parent`, step `fan`: builder `child` (scheduler `kids`) can run only on \
             worker `w2` (max_builds 1), where the waiting build of `parent` already takes \
             every slot"
        ),
        "{e}"
    );
}

#[test]
fn slots_the_parents_builds_can_fill_are_a_warning_until_max_running_leaves_one() {
    let text = config("workers = [\"w1\"]", "workers = [\"w1\"]", "");
    let w = warnings(&text);
    assert!(
        w.iter().any(|w| w.contains(
            "builder `parent`, step `fan`: builder `child` (scheduler `kids`) runs only on \
             workers that `parent` runs on too (`w1` (max_builds 2)); 2 builds of `parent` \
             waiting at once fill every slot"
        )),
        "{w:?}"
    );
    let text = config(
        "workers = [\"w1\"]\nmax_running = 1",
        "workers = [\"w1\"]",
        "",
    );
    assert_eq!(warnings(&text), Vec::<String>::new());
    // Tags count: the child needs `big`, which only w1 carries.
    let text = config("workers = [\"w2\"]", "worker_tags = [\"big\"]", "");
    assert_eq!(warnings(&text), Vec::<String>::new());
}

#[test]
fn a_chain_of_waits_adds_up_slots_and_locks() {
    // parent -> child -> grand, all on w1 (2 slots): the two waiting
    // builds fill it and grand never starts.
    let text = config("workers = [\"w1\"]", "workers = [\"w1\"]", "").replace(
        "  name = \"work\"\n  shell = \"true\"",
        "  name = \"deeper\"\n  trigger = { schedulers = [\"grand\"], wait = true }",
    ) + "\n[[scheduler]]\nname = \"grand\"\nkind = \"triggerable\"\nbuilders = [\"g\"]\n\n\
           [[builder]]\nname = \"g\"\nworkers = [\"w1\"]\n  [[builder.step]]\n  name = \"x\"\n  shell = \"true\"\n";
    let e = refused(&text);
    assert!(
        e.contains(
            "builder `parent`, step `fan`: builder `g` (scheduler `grand`) can run only on \
             worker `w1` (max_builds 2), where the waiting builds of `parent`, `child` already \
             take every slot"
        ),
        "{e}"
    );
}

#[test]
fn findings_are_pure_and_ordered() {
    let text = config("workers = [\"w1\"]", "workers = [\"w1\"]", "");
    let c = parse_str(&text, "m.toml", Path::new("/")).unwrap();
    let f = trigger_deadlocks(&c.builders, &c.schedulers, &c.locks, &c.workers);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].builder.as_str(), f[0].step, f[0].refused),
        ("parent", 0, false)
    );
}
