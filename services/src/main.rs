//! The `canopy` binary: parse arguments, set up logging, run the command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = services::cli::Cli::parse();
    services::logging::init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("canopy: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(services::cmd::run(cli)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("canopy: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
