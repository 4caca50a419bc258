//! `bbctl`: the command line for bbmaster. All logic lives in `bbctl::client`.

fn main() -> std::process::ExitCode {
    bbctl::client::main()
}
