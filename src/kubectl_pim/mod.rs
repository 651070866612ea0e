//! `kubectl pim`: the kubectl plugin for requesters, approvers and auditors.
//!
//! The binary (`src/bin/kubectl-pim.rs`) only builds a client and calls [`execute`]; tests call
//! [`run_with_clock`] in-process against the fake API server. Who "I" am comes from the
//! SelfSubjectReview API, never from a flag: the admission webhook stamps the requester and
//! checks approvers from the same authenticated identity.

mod activate;
mod cluster;
mod decide;
mod eligibility;
pub mod error;
mod extend;
pub mod identity;
mod render;
mod review;
mod show;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use jiff::{SignedDuration, Timestamp};

use crate::api::activation_request::Decision;
use crate::api::common::Role;
use crate::clock::{Clock, SystemClock};
use crate::core::duration;

pub use activate::parse_ticket;
pub use error::{CliError, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE};
pub use identity::{Me, whoami};

const IDENTITY_HELP: &str = "\
Who you are:
  kubectl pim asks the API server (SelfSubjectReview, authentication.k8s.io/v1) for your
  Kubernetes username and groups. Each directory maps that username to its principal as the
  operator is configured (a kubernetes directory keeps it as it is; another may strip `oidc:`
  or append a domain); the operator publishes each PimGroup's mapping in its status
  (status.usernameMapping), and the plugin applies it to find your EligibleAssignments and the
  requests you may approve. A username the mapping does not fit (no `oidc:` prefix, say) is
  nobody in that directory. For a PimGroup that has not published it yet (an older operator),
  the plugin guesses: your username, and your username with a `prefix:` stripped
  (oidc:alice@contoso.com -> alice@contoso.com). --principal or PIM_PRINCIPAL overrides both.
  Group principals match your Kubernetes groups.
  Approval entries always carry your Kubernetes username.

Exit codes: 0 success; 1 failure, or a request that ended without access (--wait);
  2 bad command line; 3 --wait timed out (the request carries on).";

/// `kubectl pim`: just-in-time privileged access with pim-operator.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-pim",
    bin_name = "kubectl pim",
    version,
    about = "Just-in-time privileged access (pim-operator): activate eligible roles, decide on \
             requests, export the audit trail",
    after_help = IDENTITY_HELP
)]
pub struct Cli {
    /// Your directory principal (e.g. alice@contoso.com), to use instead of what the PimGroups'
    /// published username mapping makes of your Kubernetes username. Used to find your
    /// assignments and the requests you may approve; it grants nothing (the webhook stamps who
    /// you are).
    #[arg(long, global = true, env = "PIM_PRINCIPAL", value_name = "NAME")]
    pub principal: Option<String>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Act as this user, as `kubectl --as` does (needs `impersonate` RBAC). The API server then
    /// authenticates you as that user, so the webhook stamps and checks that user.
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// With --as: a group to act in, as `kubectl --as-group` (repeatable).
    #[arg(
        long = "as-group",
        global = true,
        value_name = "GROUP",
        requires = "as_user"
    )]
    pub as_groups: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask for a role of a PimGroup for a while: creates an ActivationRequest after checking
    /// that one of your assignments covers it.
    Activate(ActivateArgs),
    /// Approve a request that waits for you (writes only your own approval entry).
    Approve {
        /// The ActivationRequest (see `kubectl pim pending`).
        name: String,
        /// Why you approve; kept for audit.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a request that waits for you (writes only your own approval entry).
    Deny {
        /// The ActivationRequest (see `kubectl pim pending`).
        name: String,
        /// Why you deny; the requester sees it.
        #[arg(long, required = true)]
        reason: String,
    },
    /// Ask for more time on one of your running activations: creates an ActivationRequest that
    /// extends it (spec.extends), through the same policy (approval, MFA, justification). Once
    /// approved, the access runs on past the original end without a break.
    Extend(ExtendArgs),
    /// End one of your activations early, or withdraw a request that is not active yet.
    Deactivate {
        /// The ActivationRequest (see `kubectl pim status`).
        name: String,
    },
    /// Your requests, or one request in detail with its approvals, conditions and history.
    Status {
        /// One ActivationRequest; without it, a table of yours.
        name: Option<String>,
    },
    /// Your EligibleAssignments and whether each lets you activate now.
    Eligible,
    /// Requests waiting for an approval you may give.
    Pending,
    /// Access reviews: without a verb, the assignments under review that are yours to decide;
    /// `approve` or `deny` writes your decision on one (only your own entry).
    Review {
        #[command(subcommand)]
        action: Option<ReviewAction>,
    },
    /// Export who requested, who approved, and when access started and ended.
    Audit {
        /// How far back: a duration (30d, 12h, P30D) or an RFC 3339 time.
        #[arg(long, default_value = "30d")]
        since: String,
        /// Up to (not including): a duration back from now or an RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Only the records of this principal (ASCII case ignored).
        #[arg(long)]
        principal: Option<String>,
        /// Only the records of this PimGroup.
        #[arg(long)]
        group: Option<String>,
        /// Only the records about this kind: ActivationRequest, EligibleAssignment,
        /// AccessPolicy, PimGroup or AccessReview. All but the first need --file.
        #[arg(long)]
        kind: Option<String>,
        /// Read the operator's audit trail (its `audit.file`, JSON Lines) instead of the
        /// cluster: changes to the declarative kinds, with who made them, review decisions,
        /// and the operator's own directory writes are only there. Repeat it for each replica's file; a record in
        /// several counts once.
        #[arg(long = "file", value_name = "PATH")]
        files: Vec<std::path::PathBuf>,
        /// csv or json.
        #[arg(
            short = 'o',
            long = "output",
            default_value = "csv",
            value_name = "FORMAT"
        )]
        output: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReviewAction {
    /// The assignments under review that are yours to decide (the default).
    List,
    /// Keep an assignment: your decision in the running instance.
    Approve(ReviewDecisionArgs),
    /// Deny an assignment: when the instance ends, it grants nothing and its manifest is listed
    /// for removal.
    Deny(ReviewDecisionArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReviewDecisionArgs {
    /// The AccessReview (see `kubectl pim review`).
    pub review: String,
    /// The EligibleAssignment under review.
    pub assignment: String,
    /// Why; kept with your decision for audit.
    #[arg(long, required = true)]
    pub reason: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ActivateArgs {
    /// The PimGroup (see `kubectl pim eligible`).
    pub group: String,
    /// The role to activate.
    #[arg(long, value_enum)]
    pub role: Option<RoleArg>,
    /// How long: 30m, 8h, PT8H. Default: the policy's maximum.
    #[arg(long, visible_alias = "for", value_name = "DURATION")]
    pub duration: Option<String>,
    /// Why you need it (most policies require one).
    #[arg(long, visible_alias = "reason", value_name = "TEXT")]
    pub justification: Option<String>,
    /// A change ticket, when the policy asks for one.
    #[arg(long, value_name = "SYSTEM:NUMBER")]
    pub ticket: Option<String>,
    /// Start later, at this RFC 3339 time (e.g. 2026-03-02T18:00:00Z). Default: once approved.
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub start: Option<Timestamp>,
    /// Follow the request until it is Active (exit 0) or ends without access (exit 1).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (exit 3; the request carries on). 0 waits forever.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: SignedDuration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExtendArgs {
    /// The running ActivationRequest to extend (see `kubectl pim status`).
    pub name: String,
    /// How much longer, past its current end: 30m, 1h, PT1H. Without renewal (the policy's
    /// spec.activation.allowRenewal) the whole stays within the policy's maximum from the
    /// original start.
    #[arg(long, visible_alias = "for", value_name = "DURATION")]
    pub by: String,
    /// Why you need more time (most policies require one).
    #[arg(long, visible_alias = "reason", value_name = "TEXT")]
    pub justification: Option<String>,
    /// A change ticket, when the policy asks for one.
    #[arg(long, value_name = "SYSTEM:NUMBER")]
    pub ticket: Option<String>,
    /// Follow the extension until it is Active (exit 0) or ends without access (exit 1).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (exit 3; the request carries on). 0 waits forever.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: SignedDuration,
}

/// `--role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Member,
    Owner,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Member => Role::Member,
            RoleArg::Owner => Role::Owner,
        }
    }
}

fn parse_time(text: &str) -> Result<Timestamp, String> {
    text.trim()
        .parse::<Timestamp>()
        .map_err(|_| format!("{text:?} is not an RFC 3339 time; write e.g. 2026-03-02T18:00:00Z"))
}

fn parse_timeout(text: &str) -> Result<SignedDuration, String> {
    match text.trim() {
        "0" => Ok(SignedDuration::ZERO),
        t => duration::parse("--timeout", t).map_err(|e| e.to_string()),
    }
}

/// What the parsed command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// `--help` or `--version`: print this and exit 0.
    Info(String),
    Run(Box<Cli>),
}

/// Parses the command line (the first item is the program name).
pub fn parse<I, T>(args: I) -> Result<Parsed, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => Ok(Parsed::Run(Box::new(cli))),
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp
            | clap::error::ErrorKind::DisplayVersion
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                Ok(Parsed::Info(e.render().to_string()))
            }
            _ => Err(CliError::Usage(e.render().to_string())),
        },
    }
}

/// What a command works with.
pub struct Context<'a> {
    pub client: &'a kube::Client,
    pub clock: &'a dyn Clock,
}

/// Parses `args` and runs the command against `client`, on the system clock.
pub async fn run<I, T>(args: I, client: kube::Client, out: &mut impl Write) -> Result<u8, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_with_clock(args, client, &SystemClock, out).await
}

/// [`run`] with the clock that times are shown and eligibility is judged against.
pub async fn run_with_clock<I, T>(
    args: I,
    client: kube::Client,
    clock: &dyn Clock,
    out: &mut impl Write,
) -> Result<u8, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match parse(args)? {
        Parsed::Info(text) => {
            write!(out, "{text}")?;
            Ok(EXIT_OK)
        }
        Parsed::Run(cli) => execute(&cli, &client, clock, out).await,
    }
}

/// Builds a client from `--kubeconfig`/`--context`, or as kubectl would (KUBECONFIG,
/// ~/.kube/config, in-cluster).
pub async fn connect(cli: &Cli) -> Result<kube::Client, CliError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let connect = |e: &dyn std::fmt::Display| CliError::Connect(e.to_string());
    let config = match (&cli.kubeconfig, &cli.context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| CliError::Connect(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| connect(&e))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| connect(&e))?,
        (None, None) => kube::Config::infer().await.map_err(|e| connect(&e))?,
    };
    let mut config = config;
    if let Some(user) = &cli.as_user {
        config.auth_info.impersonate = Some(user.clone());
        config.auth_info.impersonate_groups =
            (!cli.as_groups.is_empty()).then(|| cli.as_groups.clone());
    }
    kube::Client::try_from(config).map_err(|e| CliError::Connect(e.to_string()))
}

/// Runs a parsed command.
pub async fn execute(
    cli: &Cli,
    client: &kube::Client,
    clock: &dyn Clock,
    out: &mut impl Write,
) -> Result<u8, CliError> {
    let ctx = Context { client, clock };
    let me = || whoami(client, cli.principal.clone());
    match &cli.command {
        Command::Activate(args) => activate::activate(&ctx, &me().await?, args, out).await,
        Command::Approve { name, reason } => {
            decide::decide(
                &ctx,
                &me().await?,
                name,
                Decision::Approve,
                reason.as_deref(),
                out,
            )
            .await
        }
        Command::Deny { name, reason } => {
            decide::decide(&ctx, &me().await?, name, Decision::Deny, Some(reason), out).await
        }
        Command::Extend(args) => extend::extend(&ctx, args, out).await,
        Command::Deactivate { name } => decide::deactivate(&ctx, &me().await?, name, out).await,
        Command::Status { name: Some(name) } => show::show_one(&ctx, name, out).await,
        Command::Status { name: None } => show::list_mine(&ctx, &me().await?, out).await,
        Command::Eligible => show::eligible(&ctx, &me().await?, out).await,
        Command::Pending => show::pending(&ctx, &me().await?, out).await,
        Command::Review { action } => {
            let me = me().await?;
            let (args, decision) = match action {
                None | Some(ReviewAction::List) => {
                    return review::list_mine(&ctx, &me, out).await;
                }
                Some(ReviewAction::Approve(args)) => (args, Decision::Approve),
                Some(ReviewAction::Deny(args)) => (args, Decision::Deny),
            };
            review::decide(&ctx, &me, args, decision, out).await
        }
        Command::Audit {
            since,
            until,
            principal,
            group,
            kind,
            files,
            output,
        } => {
            let query = crate::audit::export::AuditQuery {
                since,
                until: until.as_deref(),
                principal: principal.as_deref(),
                group: group.as_deref(),
                kind: kind.as_deref(),
                files,
            };
            let text =
                crate::audit::export::audit_command(client.clone(), query, output, clock.now())
                    .await?;
            write!(out, "{text}")?;
            Ok(EXIT_OK)
        }
    }
}
