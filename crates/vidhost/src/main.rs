//! `vidhost`: the one binary. A thin shell over the library crates.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
