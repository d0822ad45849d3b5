//! `vidhost`: the one binary. A thin shell over the library crates.

mod cli;

/// mimalloc instead of glibc's malloc: the hot paths (a range request, an
/// upload creation) allocate and free many small objects across threads,
/// where glibc's arenas spent ~11 % of the server's CPU (perf, 64 KiB
/// ranges); mimalloc also hands freed large blocks (Argon2id's 19 MiB)
/// back to the OS on its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
