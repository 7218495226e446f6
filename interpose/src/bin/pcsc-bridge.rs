//! `pcsc-bridge`: the command-line tool (`doctor`, `flatpak enable|disable|status`).
//! See `src/cli/mod.rs`. The tool does not link the library crate: its `SCard*` and
//! `dlopen` definitions must never bind inside this program, which loads PC/SC
//! libraries to probe them.

#[path = "../cli/mod.rs"]
mod cli;

fn main() {
    std::process::exit(cli::main(std::env::args_os().collect()));
}
