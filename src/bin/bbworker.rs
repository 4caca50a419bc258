//! `bbworker`: runs the steps a `bbmaster` assigns to it. All logic lives
//! in `bbctl::worker` (its main in [`bbctl::worker::cli`], which `bbmaster`
//! also runs for its local workers).

use std::process::ExitCode;

fn main() -> ExitCode {
    bbctl::worker::cli::main()
}
