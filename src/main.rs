//! The `xpsync` binary: parse the command line, run, map the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = xpsync::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("xpsync: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(xpsync::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let code = xpsync::cli::exit_code(&e);
            xpsync::cli::print_fatal(&e, code);
            ExitCode::from(code)
        }
    }
}
