//! `bbbench`: the benchmark runner. All logic lives in `bbctl::bench`;
//! see `docs/benchmarks.md` for what it measures and how to run it.

fn main() -> std::process::ExitCode {
    bbctl::bench::main()
}
