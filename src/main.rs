use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = dotevals::Cli::parse();
    dotevals::cli::main(cli).into()
}
