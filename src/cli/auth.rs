//! `sagad auth token NAME --role ROLE`: makes a bearer token, and prints it
//! once with the line to add to the server's tokens file.
//!
//! Nothing is written anywhere: the token exists only in this command's
//! output (the file keeps its hash, `sagad::auth::tokens`), so the operator
//! decides where the token goes (a secret store, `SAGAD_TOKEN` of a service)
//! and which tokens file takes the line.

use sagad::auth::{Role, tokens};

use crate::cli::{
    error::CliError,
    output::{Format, OutputArgs},
};

/// `sagad auth ...`.
#[derive(clap::Subcommand, Debug)]
pub enum AuthCommand {
    /// Make a bearer token: prints it once, and the line to add to the
    /// tokens file (`serve --auth-tokens`); then SIGHUP the server, or wait
    /// a few seconds for it to notice the file changed.
    Token(TokenArgs),
}

/// `sagad auth token`.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The name calls are journaled under (letters, digits, '-', '_', '.').
    pub name: String,
    /// reader (reads everything), starter (starts sagas, reads its own),
    /// operator (reader + cancel, retry) or admin (everything).
    #[arg(long, value_parser = |s: &str| s.parse::<Role>())]
    pub role: Role,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(command: AuthCommand) -> Result<(), CliError> {
    match command {
        AuthCommand::Token(args) => token(args),
    }
}

fn token(args: TokenArgs) -> Result<(), CliError> {
    sagad::saga::definition::validate_name("token name", &args.name)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let token = tokens::generate()
        .map_err(|e| CliError::Usage(format!("cannot draw a random token: {e}")))?;
    let line = format!(
        "{} {} {}",
        args.name,
        args.role,
        tokens::TokenHash::of(&token)
    );
    match args.output.format() {
        Format::Json => outln!(
            "{}",
            serde_json::json!({
                "name": args.name,
                "role": args.role.as_str(),
                "token": token,
                "line": line,
            })
        ),
        Format::Human => {
            outln!("token (shown once; give it to the client as SAGAD_TOKEN or --token):");
            outln!("{token}");
            outln!();
            outln!("add this line to the tokens file (serve --auth-tokens FILE):");
            outln!("{line}");
        }
    }
    Ok(())
}
