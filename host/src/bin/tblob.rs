//! `tblob`: the tensor-blob command-line tool.
//!
//! Every put and get goes through the chunker component, exactly as a
//! plugin's would. Output contract (tests and scripts rely on it): `put`
//! prints only the id; `get` writes exactly the stored bytes; text output
//! escapes control characters in user strings (`--json` is exact). Exit
//! codes and stderr follow one rule, [`EXIT_CODES`] (also in `--help`).
//!
//! Commands that only read (`ls`, `stat`, `stats`, `find`, `get`,
//! `exists`, `verify`, `quota show`) open the tenant read-only: they run beside a writer
//! process, see what was committed when they started, and create nothing
//! (a missing store or tenant is an error). Commands that write wait for a
//! tenant another process writes at most `--wait` seconds (default: about
//! half a second), then fail naming its holder.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tensor_blob_host::runtime::plugin::{LimitExceeded, Plugin, PluginOptions, TimeLimitExceeded};
use tensor_blob_host::runtime::{
    self, Chunking, CompileCache, EngineOptions, KeyValue, PutOptions, Runtime, RuntimeOptions,
};
use tensor_blob_host::store::backend::object::{LeaseOptions, ObjectBackend, ObjectConfig};
use tensor_blob_host::store::backend::Backend;
use tensor_blob_host::store::{
    ArtifactId, Condition, Durability, GcPolicy, Metadata, MetadataUpdate, Order, Query, Stats,
    Store, StoreError, StoreOptions, TimeRange, QUERY_PAGE_MAX,
};
use tensor_blob_host::tenant::{Access, LOCK_WAIT_DEFAULT};

/// The exit-code and stderr rule of every command (`tblob --help`).
const EXIT_CODES: &str = "\
Exit codes:
  0  success (`exists`: present; `verify`: no damage found)
  1  the answer is no: `exists`: absent; `verify`: damage found (a damaged
     artifact, or damage found in the store files when opening)
  2  an error (bad arguments, unknown id, data that fails verification on
     `get`, I/O, a tenant in use): one line on stderr, `tblob: <message>`

Damage found when opening a tenant's store is reported once, on stderr,
before the command's own output: one line `tblob: warning: store damage: ...`
(`verify` instead lists each problem as `tblob: store damage: <problem>`).
Text output escapes control characters and backslashes in stored strings
(\\n, \\t, \\\\, \\u{1b}); `--json` output is exact. On success stderr holds
only warnings, and for `find --limit` when more matches remain, a last line
`tblob: next page: --after ID`.";

#[derive(Parser)]
#[command(
    name = "tblob",
    version,
    about = "A content-addressable blob store for WebAssembly components",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Store directory, or `s3://BUCKET/PREFIX` for a store in an
    /// S3-compatible bucket (credentials and region from the usual AWS_*
    /// variables) (default: $TBLOB_STORE, else ./.tblob).
    #[arg(long, global = true, env = "TBLOB_STORE", default_value = ".tblob")]
    store: PathBuf,
    /// With an `s3://` store: the URL of an S3-compatible server (default:
    /// $AWS_ENDPOINT_URL, else AWS itself).
    #[arg(long, global = true, value_name = "URL")]
    endpoint: Option<String>,
    /// With an `s3://` store: how long removed files' objects stay in the
    /// bucket for readers on other hosts before a writer deletes them
    /// (default: 600).
    #[arg(long, global = true, value_name = "SECONDS", value_parser = parse_grace)]
    removal_grace: Option<std::time::Duration>,
    /// Tenant whose blobs to act on.
    #[arg(long, global = true, default_value = "default")]
    tenant: String,
    /// Skip fsync (only for throwaway stores: an acknowledged write may be lost).
    #[arg(long, global = true, hide = true)]
    no_fsync: bool,
    /// Writing commands: wait up to this many seconds for a tenant another
    /// process is writing (default: about half a second), then fail.
    #[arg(long, global = true, value_name = "SECONDS", value_parser = parse_seconds)]
    wait: Option<std::time::Duration>,
    /// Directory for compiled components, shared by every store (default:
    /// $TBLOB_CACHE_DIR, else $XDG_CACHE_HOME/tensor-blob, else
    /// ~/.cache/tensor-blob).
    #[arg(long, global = true, value_name = "DIR", env = "TBLOB_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile components afresh, without reading or writing the cache
    /// (overrides --cache-dir and $TBLOB_CACHE_DIR).
    #[arg(long, global = true)]
    no_cache: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ChunkingMode {
    Fixed,
    Cdc,
}

#[derive(Subcommand)]
enum Command {
    /// Store a file (or stdin with `-`); prints the new artifact id.
    Put {
        file: PathBuf,
        /// Filename to record (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        content_type: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Id of an artifact this one links to.
        #[arg(long = "link", value_name = "ID")]
        links: Vec<String>,
        /// Id of an entity outside the store this one links to (a run, a
        /// user, a dataset elsewhere): any string of 1 to 256 bytes.
        #[arg(long = "external", value_name = "ENTITY")]
        external_links: Vec<String>,
        /// Creator to record (default: `tblob VERSION`).
        #[arg(long)]
        creator: Option<String>,
        /// A custom pair to record (repeatable; each KEY once).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        custom: Vec<String>,
        #[arg(long, value_enum, default_value = "cdc")]
        chunking: ChunkingMode,
        /// Fixed chunk size, or average CDC chunk size, in bytes.
        #[arg(long)]
        chunk_size: Option<u32>,
        /// Store the chunks as they are, not compressed (for data known
        /// not to compress: it saves the host the attempt).
        #[arg(long)]
        no_compress: bool,
    },
    /// Write an artifact's bytes to OUT (default: stdout).
    Get {
        id: String,
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Delete an artifact.
    Rm { id: String },
    /// Exit 0 if the artifact exists, 1 if not.
    Exists { id: String },
    /// An artifact's metadata, or the store's totals.
    Stat {
        id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List artifacts.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every chunk of one or all artifacts; exit 1 and print damaged
    /// ids if any fails, or if the open found damage in the store files (an
    /// unknown id is an error, exit 2).
    Verify { id: Option<String> },
    /// The store's totals (as `stat` without an id).
    ///
    /// Artifacts, chunks, logical, physical and disk bytes, the dedup
    /// ratio, garbage pending GC and dead bytes.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Ids of the artifacts meeting every condition given, one per line.
    ///
    /// All artifacts if no condition is given; in commit order (oldest
    /// first) unless --newest-first. Without --limit, every match; with
    /// --limit N, at most N, and when more remain a last stderr line
    /// `tblob: next page: --after ID` (pass it on for the next page; with
    /// --json, `next` instead). Values match exactly (bytes), never as
    /// patterns, except --name-prefix. An unknown id in --links-to or
    /// --linked-from matches nothing; an unknown --after is an error.
    Find(FindArgs),
    /// Add tags to an artifact (a tag it has already stays once); prints
    /// its new metadata.
    Tag {
        id: String,
        #[arg(required = true, value_name = "TAG")]
        tags: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove tags from an artifact (one it lacks is no error); prints its
    /// new metadata.
    Untag {
        id: String,
        #[arg(required = true, value_name = "TAG")]
        tags: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Add links from an artifact to other artifacts (each must exist), or
    /// with --external to entity ids; prints its new metadata.
    Link {
        id: String,
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<String>,
        /// The targets are external entity ids, not artifact ids.
        #[arg(long)]
        external: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove links from an artifact (one it lacks is no error); with
    /// --external, links to entity ids. Prints its new metadata.
    Unlink {
        id: String,
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<String>,
        /// The targets are external entity ids, not artifact ids.
        #[arg(long)]
        external: bool,
        #[arg(long)]
        json: bool,
    },
    /// Change an artifact's filename, content type or custom pairs in one
    /// atomic update (--unset before --set); prints its new metadata.
    Update {
        id: String,
        #[arg(long, conflicts_with = "no_name")]
        name: Option<String>,
        /// Remove the filename.
        #[arg(long)]
        no_name: bool,
        #[arg(long, conflicts_with = "no_content_type")]
        content_type: Option<String>,
        /// Remove the content type.
        #[arg(long)]
        no_content_type: bool,
        /// Add a custom pair, or replace KEY's value (repeatable; each KEY once).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove the custom pair with this key (repeatable).
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Reclaim space held by chunks no artifact references.
    Gc,
    /// Run a plugin component against the store: a WASI 0.2 command
    /// (`wasi:cli/run`), or one exporting `tensor:blob/stream-run` (world
    /// `stream-plugin-command`), which is then called instead.
    Run {
        plugin: PathBuf,
        /// Grant read access to a host directory: PATH, or HOST::GUEST.
        #[arg(long = "dir")]
        dirs: Vec<String>,
        /// Stop the plugin if it runs longer than this many seconds.
        #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
        time_limit: Option<std::time::Duration>,
        /// Largest linear memory the plugin may grow to, with an optional
        /// K, M or G suffix (default 1G; a tenant policy may lower it).
        #[arg(long, value_name = "SIZE", value_parser = parse_memory_limit)]
        memory_limit: Option<usize>,
        /// Arguments passed to the plugin.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the built-in example plugin: stores FILES (read from the current
    /// directory) and reads them back, or with none a dedup demonstration.
    Demo { files: Vec<String> },
    /// Show or change the tenant's quota (kept durably with the tenant).
    Quota {
        #[command(subcommand)]
        action: QuotaAction,
    },
}

#[derive(Subcommand)]
enum QuotaAction {
    /// Change the limits named; the others stay. Each takes a number, with
    /// an optional suffix K, M, G or T (powers of 1024: 10G, 512M, 4096),
    /// or `none` to remove that limit.
    Set {
        /// Everything the tenant may cost on disk (chunk records and metadata).
        #[arg(long, value_name = "N|none", value_parser = parse_limit)]
        bytes: Option<Limit>,
        /// Live artifacts.
        #[arg(long, value_name = "N|none", value_parser = parse_limit)]
        artifacts: Option<Limit>,
        /// Size of one artifact.
        #[arg(long, value_name = "N|none", value_parser = parse_limit)]
        artifact_bytes: Option<Limit>,
        /// Uploads open at once.
        #[arg(long, value_name = "N|none", value_parser = parse_limit)]
        writers: Option<Limit>,
    },
    /// Print each limit and what is in use.
    Show {
        #[arg(long)]
        json: bool,
    },
}

/// `tblob find`'s conditions and paging.
#[derive(Clone, clap::Args)]
struct FindArgs {
    /// Carries this tag (repeatable: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Its links include this artifact (repeatable).
    #[arg(long, value_name = "ID")]
    links_to: Vec<String>,
    /// Is one of the artifacts ID links to (repeatable).
    #[arg(long, value_name = "ID")]
    linked_from: Vec<String>,
    /// Its external links include this entity id (repeatable).
    #[arg(long = "external", value_name = "ENTITY")]
    external: Vec<String>,
    /// Has this content type.
    #[arg(long = "type", value_name = "TYPE")]
    content_type: Option<String>,
    /// Has this creator.
    #[arg(long, value_name = "CREATOR")]
    creator: Option<String>,
    /// Has exactly this filename.
    #[arg(long, value_name = "NAME", conflicts_with = "name_prefix")]
    name: Option<String>,
    /// Has a filename starting with these bytes.
    #[arg(long, value_name = "PREFIX")]
    name_prefix: Option<String>,
    /// Created at or after this time (milliseconds since the Unix epoch).
    #[arg(long, value_name = "MS")]
    created_since: Option<u64>,
    /// Created before this time (milliseconds since the Unix epoch).
    #[arg(long, value_name = "MS")]
    created_before: Option<u64>,
    /// Last changed at or after this time (milliseconds since the Unix epoch).
    #[arg(long, value_name = "MS")]
    modified_since: Option<u64>,
    /// Last changed before this time (milliseconds since the Unix epoch).
    #[arg(long, value_name = "MS")]
    modified_before: Option<u64>,
    /// Has a custom pair with this key (repeatable).
    #[arg(long, value_name = "KEY")]
    custom_key: Vec<String>,
    /// Has this custom pair (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    custom: Vec<String>,
    /// Newest first (reverse commit order) instead of oldest first.
    #[arg(long)]
    newest_first: bool,
    /// Continue after this id (the cursor a previous page printed).
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
    /// At most this many ids (1 to 65536), then the cursor of the next page.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..=QUERY_PAGE_MAX as u64)
    )]
    limit: Option<u64>,
    /// One JSON object `{"ids": [...], "next": ID or null}` instead.
    #[arg(long)]
    json: bool,
}

/// A quota limit as given on the command line: `None` is `none`.
#[derive(Clone, Copy)]
struct Limit(Option<u64>);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        // The reader of stdout went away (`tblob find | head`): it has
        // what it wanted, so stop quietly, as ripgrep does.
        Err(error) if broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tblob: {}", error_line(&error));
            ExitCode::from(2)
        }
    }
}

/// Whether `error` is a write to a closed pipe.
fn broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A command line clap refused: help and version print as usual; anything
/// else is exit 2 with one line, as [`EXIT_CODES`] promises (clap's own
/// report runs to several lines: usage, tips).
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    let rendered = error.render().to_string();
    let first = rendered.lines().find(|line| !line.trim().is_empty());
    let message = first.unwrap_or("bad arguments");
    let message = message.strip_prefix("error: ").unwrap_or(message);
    eprintln!(
        "tblob: invalid argument: {} (see tblob --help)",
        escape(message, false)
    );
    ExitCode::from(2)
}

/// `error` and its causes as one line. A cause whose text the line already
/// holds is left out: an I/O error's message quotes its OS error, which is
/// also its source, and printing both said the cause twice.
fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    escape(&line, false).into_owned()
}

/// `text` with its control characters escaped as in Rust strings (`\n`,
/// `\t`, `\r`, `\u{1b}`), so a newline in a stored filename cannot split an
/// entry of text output; with `backslashes`, `\` is doubled too, so the
/// escaped text reads back unambiguously.
fn escape(text: &str, backslashes: bool) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| c.is_control() || (backslashes && c == '\\');
    if !text.chars().any(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' if backslashes => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A stored string (filename, tag, custom pair...) for text output.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    escape(text, true)
}

/// Whether `command` only reads, so it opens its tenant read-only.
fn reads_only(command: &Command) -> bool {
    match command {
        Command::Get { .. }
        | Command::Exists { .. }
        | Command::Stat { .. }
        | Command::Stats { .. }
        | Command::Find(_)
        | Command::Ls { .. }
        | Command::Verify { .. } => true,
        Command::Quota { action } => matches!(action, QuotaAction::Show { .. }),
        Command::Put { .. }
        | Command::Rm { .. }
        | Command::Tag { .. }
        | Command::Untag { .. }
        | Command::Link { .. }
        | Command::Unlink { .. }
        | Command::Update { .. }
        | Command::Gc
        | Command::Run { .. }
        | Command::Demo { .. } => false,
    }
}

/// A put's input, opened before the store is: a put that cannot start
/// creates nothing.
type PutSource = (Box<dyn Read>, Option<u64>);

/// The chunking `--chunking` and `--chunk-size` ask for (`None`: the
/// chunker's default), checked against the limits the chunker applies.
fn put_chunking(mode: ChunkingMode, size: Option<u32>) -> Result<Option<Chunking>> {
    use tensor_blob_chunking as chunking;
    let (chunking, check) = match (mode, size) {
        (ChunkingMode::Fixed, size) => {
            let size = size.unwrap_or(1 << 16);
            (Some(Chunking::Fixed(size)), chunking::Chunking::Fixed(size))
        }
        (ChunkingMode::Cdc, None) => return Ok(None),
        (ChunkingMode::Cdc, Some(avg)) => {
            let (min, max) = ((avg / 4).max(64), avg.saturating_mul(4));
            let params =
                runtime::bindings::chunker::tensor::blob::types::CdcParams { min, avg, max };
            let check = chunking::Chunking::ContentDefined(chunking::CdcParams {
                min_bytes: min,
                avg_bytes: avg,
                max_bytes: max,
            });
            (Some(Chunking::ContentDefined(params)), check)
        }
    };
    check
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid argument: --chunk-size: {e}"))?;
    Ok(chunking)
}

/// An artifact id given on the command line (`what` names the argument):
/// the length is checked first, so a long string never ends up whole in
/// the message.
fn parse_id(what: &str, text: &str) -> Result<ArtifactId> {
    let excerpt: String = text.chars().take(40).collect();
    let ellipsis = if excerpt.len() < text.len() {
        "..."
    } else {
        ""
    };
    let invalid = || {
        anyhow::anyhow!(
            "invalid argument: {what} {:?}{ellipsis}: expected 32 hex digits",
            escape(&excerpt, false)
        )
    };
    if text.len() != 32 {
        return Err(invalid());
    }
    text.parse().map_err(|_| invalid())
}

/// `KEY=VALUE` arguments of `flag` as pairs (split at the first `=`; the
/// value may hold more), each key non-empty and given once.
fn parse_pairs(flag: &str, texts: &[String]) -> Result<Vec<(String, String)>> {
    use tensor_blob_host::store::{CUSTOM_KEY_BYTES_MAX, CUSTOM_PAIRS_MAX, CUSTOM_VALUE_BYTES_MAX};
    if texts.len() > CUSTOM_PAIRS_MAX {
        bail!(
            "invalid argument: {flag} given {} times, at most {CUSTOM_PAIRS_MAX}",
            texts.len()
        );
    }
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(texts.len());
    for text in texts {
        let Some((key, value)) = text.split_once('=').filter(|(key, _)| !key.is_empty()) else {
            bail!(
                "invalid argument: {flag} {:?}: expected KEY=VALUE with a non-empty KEY",
                escape(text, false)
            );
        };
        if key.len() > CUSTOM_KEY_BYTES_MAX || value.len() > CUSTOM_VALUE_BYTES_MAX {
            bail!(
                "invalid argument: {flag}: a key is 1..={CUSTOM_KEY_BYTES_MAX} bytes, \
                 a value at most {CUSTOM_VALUE_BYTES_MAX}"
            );
        }
        if pairs.iter().any(|(k, _)| k == key) {
            bail!(
                "invalid argument: {flag}: key {:?} given twice",
                escape(key, false)
            );
        }
        pairs.push((key.to_string(), value.to_string()));
    }
    Ok(pairs)
}

/// Checks external entity ids against the store's limits.
fn check_external_links(entities: &[String]) -> Result<()> {
    use tensor_blob_host::store::{EXTERNAL_LINKS_MAX, EXTERNAL_LINK_BYTES_MAX};
    if entities.len() > EXTERNAL_LINKS_MAX {
        bail!("invalid argument: at most {EXTERNAL_LINKS_MAX} external links");
    }
    if entities
        .iter()
        .any(|e| e.is_empty() || e.len() > EXTERNAL_LINK_BYTES_MAX)
    {
        bail!("invalid argument: an external link must be 1..={EXTERNAL_LINK_BYTES_MAX} bytes");
    }
    Ok(())
}

/// Checks a put's metadata against the store's limits (which the chunker
/// and the store check again) and opens its input.
fn open_put_source(
    file: &Path,
    strings: [(&str, Option<&String>); 3],
    tags: &[String],
    links: &[String],
) -> Result<PutSource> {
    use tensor_blob_host::store::{LINKS_MAX, STRING_BYTES_MAX, TAGS_MAX, TAG_BYTES_MAX};
    for (name, value) in strings {
        if value.is_some_and(|v| v.len() > STRING_BYTES_MAX) {
            bail!("invalid argument: {name} is over {STRING_BYTES_MAX} bytes");
        }
    }
    if tags.len() > TAGS_MAX || links.len() > LINKS_MAX {
        bail!("invalid argument: at most {TAGS_MAX} tags and {LINKS_MAX} links");
    }
    if tags.iter().any(|t| t.is_empty() || t.len() > TAG_BYTES_MAX) {
        bail!("invalid argument: a tag must be 1..={TAG_BYTES_MAX} bytes");
    }
    for link in links {
        parse_id("--link", link)?;
    }
    if file == Path::new("-") {
        return Ok((Box::new(std::io::stdin().lock()), None));
    }
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let metadata = f.metadata()?;
    if metadata.is_dir() {
        bail!("{} is a directory", file.display());
    }
    Ok((Box::new(f), Some(metadata.len())))
}

fn run(cli: Cli) -> Result<u8> {
    // Checked before anything is opened or created: a bad name, a missing
    // input file or link makes no store and no tenant.
    tensor_blob_host::tenant::validate_name(&cli.tenant)?;
    let mut put_inputs = match &cli.command {
        Command::Put {
            file,
            name,
            content_type,
            tags,
            links,
            external_links,
            creator,
            custom,
            chunking,
            chunk_size,
            ..
        } => Some((
            put_chunking(*chunking, *chunk_size)?,
            parse_pairs("--set", custom)?,
            check_external_links(external_links)?,
            open_put_source(
                file,
                [
                    ("--name", name.as_ref()),
                    ("--content-type", content_type.as_ref()),
                    ("--creator", creator.as_ref()),
                ],
                tags,
                links,
            )?,
        )),
        _ => None,
    };
    let mut change = metadata_change(&cli.command)?;
    let mut query = match &cli.command {
        Command::Find(args) => Some(find_query(args)?),
        _ => None,
    };
    let runtime = open_runtime(&cli)?;
    let tenant = cli.tenant.as_str();
    // Damage the open found and stepped over (a bad metadata record,
    // unreadable segment bytes, a lost chunk), reported once and before
    // the command's own output: `verify` lists it and fails on it, every
    // other command says in one line that there is some.
    let store_damage: Vec<String> = runtime
        .tenant_store(tenant)?
        .recovery_report()
        .damage()
        .map(|problem| escape(&problem.to_string(), false).into_owned())
        .collect();
    if !store_damage.is_empty() && !matches!(cli.command, Command::Verify { .. }) {
        eprintln!(
            "tblob: warning: store damage: {} problem(s) found opening tenant {tenant}; `tblob verify` lists them",
            store_damage.len()
        );
    }
    match cli.command {
        Command::Put {
            file,
            name,
            content_type,
            tags,
            links,
            external_links,
            creator,
            no_compress,
            ..
        } => {
            let (chunking, custom, (), (mut source, size)) =
                put_inputs.take().expect("checked before the runtime");
            let filename = name.or_else(|| {
                (file != Path::new("-"))
                    .then(|| file.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .flatten()
            });
            let options = PutOptions {
                filename,
                content_type,
                creator: creator.or_else(|| Some(format!("tblob {}", env!("CARGO_PKG_VERSION")))),
                tags,
                links,
                external_links,
                custom: custom
                    .into_iter()
                    .map(|(key, value)| KeyValue { key, value })
                    .collect(),
                chunking,
                compress: no_compress.then_some(false),
            };
            let mut chunker = runtime.chunker(tenant)?;
            let bar = progress(size, "put");
            let id = chunker.put_from(&mut source, &options, &mut |n| bar.set_position(n))?;
            bar.finish_and_clear();
            println!("{id}");
            Ok(0)
        }
        Command::Get { id, output } => {
            let size = runtime
                .tenant_store(tenant)?
                .metadata(&parse_id("artifact id", &id)?)?
                .size;
            let mut chunker = runtime.chunker(tenant)?;
            let bar = progress(Some(size), "get");
            match output {
                None => {
                    let stdout = std::io::stdout();
                    let mut sink = std::io::BufWriter::new(stdout.lock());
                    chunker.get_into(&id, &mut sink, &mut |n| bar.set_position(n))?;
                    sink.flush()?;
                }
                Some(path) => {
                    // Written beside the target and renamed into place, so a
                    // failed get never leaves a half file under OUT's name.
                    let partial = partial_path(&path);
                    let result = (|| -> Result<()> {
                        let file = std::fs::File::create(&partial)
                            .with_context(|| format!("creating {}", partial.display()))?;
                        let mut sink = std::io::BufWriter::new(file);
                        chunker.get_into(&id, &mut sink, &mut |n| bar.set_position(n))?;
                        sink.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                        std::fs::rename(&partial, &path)
                            .with_context(|| format!("renaming to {}", path.display()))?;
                        Ok(())
                    })();
                    if result.is_err() {
                        let _ = std::fs::remove_file(&partial);
                    }
                    result?;
                }
            }
            bar.finish_and_clear();
            Ok(0)
        }
        Command::Rm { id } => {
            runtime
                .tenant_store(tenant)?
                .delete(&parse_id("artifact id", &id)?)?;
            Ok(0)
        }
        Command::Exists { id } => {
            let id = parse_id("artifact id", &id)?;
            Ok(if runtime.tenant_store(tenant)?.exists(&id)? {
                0
            } else {
                1
            })
        }
        Command::Stat { id: Some(id), json } => {
            let id = parse_id("artifact id", &id)?;
            print_metadata(&runtime.tenant_store(tenant)?.metadata(&id)?, json)?;
            Ok(0)
        }
        Command::Stat { id: None, json } | Command::Stats { json } => {
            print_stats(&runtime.tenant_store(tenant)?.stats(), json)?;
            Ok(0)
        }
        Command::Find(args) => {
            let query = query.take().expect("checked before the runtime");
            find(&runtime.tenant_store(tenant)?, query, &args)
        }
        Command::Tag { .. }
        | Command::Untag { .. }
        | Command::Link { .. }
        | Command::Unlink { .. }
        | Command::Update { .. } => {
            let (id, change, json) = change.take().expect("checked before the runtime");
            let meta = runtime.tenant_store(tenant)?.update(&id, change)?;
            print_metadata(&meta, json)?;
            Ok(0)
        }
        Command::Ls { json } => {
            let store = runtime.tenant_store(tenant)?;
            let metas = store
                .ids()
                .map(|id| store.metadata(&id))
                .collect::<Result<Vec<_>, _>>()?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&metas)?)?;
            } else {
                for meta in metas {
                    writeln!(
                        out,
                        "{}  {:>12}  {}",
                        meta.id,
                        meta.size,
                        meta.filename.as_deref().map_or("-".into(), printable)
                    )?;
                }
            }
            out.flush()?;
            Ok(0)
        }
        Command::Verify { id } => {
            let store = runtime.tenant_store(tenant)?;
            for problem in &store_damage {
                eprintln!("tblob: store damage: {problem}");
            }
            // Checked before the verdict: an unknown or malformed id is an
            // error (exit 2), not damage.
            let (checked, damaged, dangling, log_problems) = match id {
                Some(id) => {
                    let id: ArtifactId = id.parse()?;
                    match store.verify(&id) {
                        Ok(()) => (1, Vec::new(), Vec::new(), Vec::new()),
                        Err(e @ StoreError::NotFound(_)) => return Err(e.into()),
                        Err(e) => (1, vec![(id, e.to_string())], Vec::new(), Vec::new()),
                    }
                }
                None => {
                    let report = store.verify_all();
                    (
                        report.artifacts_checked,
                        report.damaged,
                        report.dangling_links,
                        report.log_problems,
                    )
                }
            };
            // Those the open found too (it read that far) are listed once.
            let log_problems: Vec<String> = log_problems
                .iter()
                .map(|problem| escape(&problem.to_string(), false).into_owned())
                .filter(|problem| !store_damage.contains(problem))
                .collect();
            for problem in &log_problems {
                eprintln!("tblob: store damage: {problem}");
            }
            let store_damage_count = store_damage.len() + log_problems.len();
            // Only damage to meta.log leaves one (a delete drops the links
            // to what it deletes); the artifact's bytes are whole.
            for (id, target) in &dangling {
                eprintln!("tblob: {id}: links to {target}, which is not in the store");
            }
            for (id, why) in &damaged {
                println!("{id}");
                eprintln!("tblob: {id}: {}", escape(why, false));
            }
            eprintln!(
                "tblob: verified {checked} artifacts, {} damaged; {} problems found in the store files",
                damaged.len(),
                store_damage_count
            );
            Ok(
                if damaged.is_empty() && dangling.is_empty() && store_damage_count == 0 {
                    0
                } else {
                    1
                },
            )
        }
        Command::Gc => {
            let report = runtime.tenant_store(tenant)?.gc()?;
            let stats = runtime.tenant_store(tenant)?.stats();
            println!(
                "freed {} garbage chunks ({} bytes); compacted {} segments ({} live bytes copied); reclaimed {} segment bytes and {} metadata log bytes",
                report.chunks_removed,
                report.chunk_bytes_removed,
                report.segments_removed,
                report.bytes_copied,
                report.bytes_reclaimed,
                report.meta_bytes_reclaimed
            );
            if report.bytes_punched > 0 {
                // A full disk: garbage freed in place (holes punched).
                println!(
                    "no room to copy live records out: freed {} bytes of garbage in place",
                    report.bytes_punched
                );
            }
            println!(
                "disk bytes: {} before, {} after",
                report.disk_bytes_before, report.disk_bytes_after
            );
            println!(
                "pending: {} garbage chunks ({} bytes) in segments not worth compacting; {} dead bytes on disk",
                stats.garbage_chunks, stats.garbage_bytes, stats.dead_bytes
            );
            if let Some(config) = object_config(&cli) {
                println!(
                    "bucket: objects of removed files stay for the removal grace ({} s, for readers on other hosts) and go at a later write or writer's open",
                    config.removal_grace.as_secs()
                );
            }
            Ok(0)
        }
        Command::Run {
            plugin,
            dirs,
            time_limit,
            memory_limit,
            args,
        } => {
            let wasm =
                std::fs::read(&plugin).with_context(|| format!("reading {}", plugin.display()))?;
            let mut argv = vec![plugin.display().to_string()];
            argv.extend(args);
            let limits = RunLimits {
                time: time_limit,
                memory_bytes_max: memory_limit,
            };
            run_plugin(&runtime, tenant, &wasm, argv, &dirs, limits)
        }
        Command::Demo { files } => {
            let mut argv = vec!["example-plugin".to_string()];
            argv.extend(files);
            run_plugin(
                &runtime,
                tenant,
                tensor_blob_artifacts::EXAMPLE_PLUGIN_WASM,
                argv,
                &[".".to_string()],
                RunLimits::default(),
            )
        }
        Command::Quota { action } => quota(&runtime, tenant, action),
    }
}

/// What `tag`, `untag`, `link`, `unlink` and `update` change (the id, the
/// update, `--json`), checked before the store is opened; `None` for other
/// commands. Each is one [`MetadataUpdate`], so one atomic, durable record.
fn metadata_change(command: &Command) -> Result<Option<(ArtifactId, MetadataUpdate, bool)>> {
    let mut change = MetadataUpdate::default();
    let (id, json) = match command {
        Command::Tag { id, tags, json } => {
            change.add_tags = tags.clone();
            (id, json)
        }
        Command::Untag { id, tags, json } => {
            change.remove_tags = tags.clone();
            (id, json)
        }
        Command::Link {
            id,
            targets,
            external,
            json,
        } => {
            if *external {
                // Bounded by the store's update, as every metadata change.
                change.add_external_links = targets.clone();
            } else {
                change.add_links = parse_ids("TARGET", targets)?;
            }
            (id, json)
        }
        Command::Unlink {
            id,
            targets,
            external,
            json,
        } => {
            if *external {
                change.remove_external_links = targets.clone();
            } else {
                change.remove_links = parse_ids("TARGET", targets)?;
            }
            (id, json)
        }
        Command::Update {
            id,
            name,
            no_name,
            content_type,
            no_content_type,
            set,
            unset,
            json,
        } => {
            change.filename = if *no_name {
                Some(None)
            } else {
                name.clone().map(Some)
            };
            change.content_type = if *no_content_type {
                Some(None)
            } else {
                content_type.clone().map(Some)
            };
            change.set_custom = parse_pairs("--set", set)?;
            change.unset_custom = unset.clone();
            if change == MetadataUpdate::default() {
                bail!(
                    "invalid argument: update: nothing to change (give --name, --no-name, \
                     --content-type, --no-content-type, --set or --unset)"
                );
            }
            (id, json)
        }
        _ => return Ok(None),
    };
    Ok(Some((parse_id("artifact id", id)?, change, *json)))
}

/// Artifact ids given as `what`.
fn parse_ids(what: &str, texts: &[String]) -> Result<Vec<ArtifactId>> {
    texts.iter().map(|text| parse_id(what, text)).collect()
}

/// Adds `entities` to the external links of `id`, just put. The put's
/// options (WIT `put-options`) cannot carry them yet, so this is a second
/// record; if it fails, the artifact (whose id was never printed) is
/// deleted again and the put fails, so a failed put leaves nothing.
/// One artifact's metadata, as `stat ID` prints it (`--json`: exact).
fn print_metadata(meta: &Metadata, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(meta)?)?;
        return Ok(());
    }
    fn text(value: Option<&str>) -> std::borrow::Cow<'_, str> {
        value.map_or("-".into(), printable)
    }
    let list = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>().join(", ");
    writeln!(out, "id:           {}", meta.id)?;
    writeln!(out, "filename:     {}", text(meta.filename.as_deref()))?;
    writeln!(out, "content-type: {}", text(meta.content_type.as_deref()))?;
    writeln!(out, "creator:      {}", text(meta.creator.as_deref()))?;
    writeln!(out, "size:         {}", meta.size)?;
    writeln!(out, "digest:       {}", meta.digest)?;
    writeln!(out, "chunks:       {}", meta.chunk_count)?;
    writeln!(out, "created-ms:   {}", meta.created_ms)?;
    writeln!(out, "modified-ms:  {}", meta.modified_ms)?;
    let tags = list(&mut meta.tags.iter().map(|tag| printable(tag).into_owned()));
    writeln!(out, "tags:         {tags}")?;
    let links = list(&mut meta.links.iter().map(|link| link.to_string()));
    writeln!(out, "links:        {links}")?;
    let external = list(
        &mut meta
            .external_links
            .iter()
            .map(|entity| printable(entity).into_owned()),
    );
    writeln!(out, "external:     {external}")?;
    for (key, value) in &meta.custom {
        writeln!(out, "custom:       {}={}", printable(key), printable(value))?;
    }
    Ok(())
}

/// The store's totals, as `stats` (and `stat` without an id) print them.
fn print_stats(stats: &Stats, json: bool) -> Result<()> {
    let ratio = |of: u64, to: u64| if to == 0 { 1.0 } else { of as f64 / to as f64 };
    // Content per distinct chunk byte, and distinct chunk bytes per byte
    // stored (1.0 when nothing compressed).
    let dedup_ratio = ratio(stats.logical_bytes, stats.physical_bytes);
    let compression_ratio = ratio(stats.physical_bytes, stats.stored_bytes);
    let mut out = std::io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(stats)?;
        value["dedup_ratio"] = serde_json::json!(dedup_ratio);
        value["compression_ratio"] = serde_json::json!(compression_ratio);
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    writeln!(out, "artifacts:      {}", stats.artifacts)?;
    writeln!(out, "chunks:         {}", stats.chunks)?;
    writeln!(out, "logical bytes:  {}", stats.logical_bytes)?;
    writeln!(out, "physical bytes: {}", stats.physical_bytes)?;
    writeln!(
        out,
        "stored bytes:   {} (compression ratio {compression_ratio:.3})",
        stats.stored_bytes
    )?;
    writeln!(out, "disk bytes:     {}", stats.disk_bytes)?;
    writeln!(out, "dedup ratio:    {dedup_ratio:.3}")?;
    writeln!(
        out,
        "garbage:        {} chunks, {} bytes (pending GC)",
        stats.garbage_chunks, stats.garbage_bytes
    )?;
    writeln!(out, "live bytes:     {}", stats.live_bytes)?;
    writeln!(out, "dead bytes:     {}", stats.dead_bytes)?;
    writeln!(out, "segments:       {}", stats.segments)?;
    Ok(())
}

/// Ids `find` asks the store for at a time when it prints every match.
const FIND_PAGE_IDS: usize = 4096;
const _: () = assert!(FIND_PAGE_IDS <= QUERY_PAGE_MAX);

/// `find`'s conditions as one [`Query`] (checked before the store is
/// opened, so bad arguments are reported as such even without a store).
fn find_query(args: &FindArgs) -> Result<Query> {
    let args = args.clone();
    let mut conditions: Vec<Condition> = Vec::new();
    conditions.extend(args.tags.into_iter().map(Condition::Tag));
    for id in &args.links_to {
        conditions.push(Condition::LinksTo(parse_id("--links-to", id)?));
    }
    for id in &args.linked_from {
        conditions.push(Condition::LinkedFrom(parse_id("--linked-from", id)?));
    }
    conditions.extend(args.external.into_iter().map(Condition::LinksToExternal));
    conditions.extend(args.content_type.map(Condition::ContentType));
    conditions.extend(args.creator.map(Condition::Creator));
    conditions.extend(args.name.map(Condition::Filename));
    conditions.extend(args.name_prefix.map(Condition::FilenamePrefix));
    let range = |since: Option<u64>, before: Option<u64>| {
        (since.is_some() || before.is_some()).then(|| TimeRange {
            from_ms: since.unwrap_or(0),
            to_ms: before.unwrap_or(u64::MAX),
        })
    };
    conditions.extend(range(args.created_since, args.created_before).map(Condition::Created));
    conditions.extend(range(args.modified_since, args.modified_before).map(Condition::Modified));
    conditions.extend(args.custom_key.into_iter().map(Condition::CustomKey));
    for (key, value) in parse_pairs("--custom", &args.custom)? {
        conditions.push(Condition::Custom(key, value));
    }
    let query = Query {
        conditions,
        order: if args.newest_first {
            Order::NewestFirst
        } else {
            Order::OldestFirst
        },
        after: args
            .after
            .as_deref()
            .map(|after| parse_id("--after", after))
            .transpose()?,
        // `--limit` is at most `QUERY_PAGE_MAX` (clap checked), so it fits.
        limit: args.limit.map_or(FIND_PAGE_IDS, |limit| limit as usize),
    };
    Ok(query)
}

/// The `find` subcommand: one page (`--limit`) or every page of `query`.
fn find(store: &Store, mut query: Query, args: &FindArgs) -> Result<u8> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut ids = Vec::new();
    let next = loop {
        let page = store.query(&query)?;
        if args.json {
            ids.extend(page.ids);
        } else {
            for id in &page.ids {
                writeln!(out, "{id}")?;
            }
        }
        match page.next {
            Some(next) if args.limit.is_none() => query.after = Some(next),
            next => break next,
        }
    };
    if args.json {
        let value = serde_json::json!({ "ids": ids, "next": next });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    }
    out.flush()?;
    drop(out);
    if let (Some(next), false) = (next, args.json) {
        eprintln!("tblob: next page: --after {next}");
    }
    Ok(0)
}

/// The `quota` subcommand.
fn quota(runtime: &Runtime, tenant: &str, action: QuotaAction) -> Result<u8> {
    let store = runtime.tenant_store(tenant)?;
    match action {
        QuotaAction::Set {
            bytes,
            artifacts,
            artifact_bytes,
            writers,
        } => {
            let mut quota = store.quota();
            for (limit, field) in [
                (bytes, &mut quota.bytes_max),
                (artifacts, &mut quota.artifacts_max),
                (artifact_bytes, &mut quota.artifact_bytes_max),
                (writers, &mut quota.writers_max),
            ] {
                if let Some(Limit(value)) = limit {
                    *field = value;
                }
            }
            store.set_quota(quota)?;
        }
        QuotaAction::Show { json } => {
            let quota = store.quota();
            let usage = store.usage();
            if json {
                let value = serde_json::json!({
                    "tenant": tenant,
                    "quota": quota,
                    "usage": usage,
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                let show =
                    |max: Option<u64>| max.map_or("unlimited".to_string(), |m| m.to_string());
                println!("tenant:          {tenant}");
                println!(
                    "bytes:           {} of {}",
                    usage.bytes,
                    show(quota.bytes_max)
                );
                println!(
                    "artifacts:       {} of {}",
                    usage.artifacts,
                    show(quota.artifacts_max)
                );
                println!("artifact-bytes:  {} each", show(quota.artifact_bytes_max));
                println!(
                    "writers:         {} of {}",
                    usage.writers,
                    show(quota.writers_max)
                );
            }
        }
    }
    Ok(0)
}

/// A size or count: digits with an optional K, M, G or T suffix (powers of
/// 1024, either case), or `none` (no limit).
fn parse_limit(text: &str) -> Result<Limit, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    let (digits, shift) = match text.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&text[..text.len() - 1], 10),
        Some(b'M') => (&text[..text.len() - 1], 20),
        Some(b'G') => (&text[..text.len() - 1], 30),
        Some(b'T') => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    let bad =
        || format!("{text:?}: expected a number with an optional K, M, G or T suffix, or none");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let value: u64 = digits.parse().map_err(|_| bad())?;
    value
        .checked_mul(1 << shift)
        .map(|v| Limit(Some(v)))
        .ok_or_else(|| format!("{text:?} does not fit in 64 bits"))
}

/// The store root, as a capability: the CLI is the one place that turns a
/// path into one. Writing commands create it if missing (each new
/// directory fsynced into its parent, so a power cut cannot take the store
/// directory away from under synced data). Reading commands and metadata
/// changes (`tag`, `link`, `update`...) create nothing: a missing store or
/// tenant is an error naming it.
fn open_root(cli: &Cli) -> Result<cap_std::fs::Dir> {
    let path = &cli.store;
    // A metadata change needs an artifact, so it never creates a store.
    let changes_only = matches!(
        cli.command,
        Command::Tag { .. }
            | Command::Untag { .. }
            | Command::Link { .. }
            | Command::Unlink { .. }
            | Command::Update { .. }
    );
    if !reads_only(&cli.command) && !changes_only {
        return tensor_blob_host::store::backend::cap::create_ambient_dir(
            path,
            cap_std::ambient_authority(),
        )
        .with_context(|| format!("opening store directory {}", path.display()));
    }
    if !path.is_dir() {
        bail!("no store at {}", path.display());
    }
    if !path.join("tenants").join(&cli.tenant).is_dir() {
        bail!("no tenant {} in store {}", cli.tenant, path.display());
    }
    cap_std::fs::Dir::open_ambient_dir(path, cap_std::ambient_authority())
        .with_context(|| format!("opening store directory {}", path.display()))
}

/// The store's bucket if `--store` is an `s3://` URL.
fn object_config(cli: &Cli) -> Option<ObjectConfig> {
    let mut config = ObjectConfig::from_url(cli.store.to_str()?)?;
    config.endpoint = cli.endpoint.clone();
    if let Some(grace) = cli.removal_grace {
        config.removal_grace = grace;
    }
    Some(config)
}

/// An `s3://` store root. Reading commands on a prefix that holds no
/// store fail as on a path.
fn open_object_root(cli: &Cli, config: &ObjectConfig) -> Result<Arc<ObjectBackend>> {
    let backend = ObjectBackend::open(config, LeaseOptions::default())
        .with_context(|| format!("opening store {}", cli.store.display()))?;
    if reads_only(&cli.command) {
        let tenant = backend
            .dir("tenants", false)
            .and_then(|(tenants, _)| tenants.dir(&cli.tenant, false));
        if let Err(e) = tenant {
            if e.kind() == std::io::ErrorKind::NotFound {
                bail!("no tenant {} in store {}", cli.tenant, cli.store.display());
            }
            return Err(e).with_context(|| format!("opening store {}", cli.store.display()));
        }
    }
    Ok(Arc::new(backend))
}

fn open_runtime(cli: &Cli) -> Result<Runtime> {
    let object = object_config(cli);
    let root = match &object {
        Some(config) => Root::Object(open_object_root(cli, config)?),
        None => Root::Dir(open_root(cli)?),
    };
    let cache = if cli.no_cache {
        CompileCache::Off
    } else {
        cli.cache_dir
            .clone()
            .map_or(CompileCache::User, CompileCache::Dir)
    };
    let engine = runtime::new_engine(&EngineOptions {
        pooling: None,
        cache,
        // Where plugins run: a tenant's policy may set a time limit even
        // when the command line does not. Elsewhere the checks would cost
        // a little on every loop for nothing.
        epoch_interruption: matches!(cli.command, Command::Run { .. } | Command::Demo { .. }),
    })?;
    for warning in &engine.warnings {
        eprintln!("tblob: warning: {warning}");
    }
    let engine = engine.engine;
    let store = StoreOptions {
        durability: if cli.no_fsync {
            Durability::None
        } else {
            Durability::Sync
        },
        ..StoreOptions::default()
    };
    let options = RuntimeOptions {
        store,
        chunker_wasm: None,
        // Background GC only where the process lives on: a plugin run.
        // One-shot commands leave it to `tblob gc`.
        gc: matches!(cli.command, Command::Run { .. }).then(GcPolicy::default),
        access: Access {
            read_only: reads_only(&cli.command),
            // A one-shot reader: quick to open at any scale; a writer
            // starting meanwhile waits `--wait` for it.
            reads_in_place: true,
            // In a bucket, a writer that crashed holds its lease until its
            // term ends: waited for by default.
            lock_wait: cli.wait.unwrap_or(match &root {
                Root::Object(backend) => {
                    backend.lease_options().takeover_wait() + std::time::Duration::from_secs(1)
                }
                Root::Dir(_) => LOCK_WAIT_DEFAULT,
            }),
        },
    };
    Ok(match root {
        Root::Dir(dir) => Runtime::new(&engine, dir, options)?,
        Root::Object(backend) => Runtime::new_on(&engine, backend, options)?,
    })
}

/// Where the store is: a directory, or a bucket.
enum Root {
    Dir(cap_std::fs::Dir),
    Object(Arc<ObjectBackend>),
}

/// `tblob run`'s own limits; a tenant's policy may be tighter.
#[derive(Default)]
struct RunLimits {
    time: Option<std::time::Duration>,
    memory_bytes_max: Option<usize>,
}

fn run_plugin(
    runtime: &Runtime,
    tenant: &str,
    wasm: &[u8],
    args: Vec<String>,
    dirs: &[String],
    limits: RunLimits,
) -> Result<u8> {
    let read_dirs = dirs
        .iter()
        .map(|d| match d.split_once("::") {
            Some((host, guest)) => (PathBuf::from(host), guest.to_string()),
            None => (PathBuf::from(d), d.clone()),
        })
        .collect();
    let options = PluginOptions {
        args,
        read_dirs,
        memory_bytes_max: limits.memory_bytes_max,
        time_limit: limits.time,
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let plugin = Plugin::new(runtime, wasm)?;
    let code = tokio
        .block_on(plugin.run(tenant, &options))
        .map_err(plugin_failure)?;
    if !(0..=255).contains(&code) {
        bail!("plugin exited with code {code}");
    }
    Ok(code as u8)
}

/// A plugin's failure as one line: its cause (a limit it ran into) or the
/// trap, without the wasm backtrace (the plugin's own stderr, above, says
/// why it stopped).
fn plugin_failure(error: wasmtime::Error) -> anyhow::Error {
    if let Some(limit) = error.downcast_ref::<TimeLimitExceeded>() {
        return anyhow::anyhow!("{limit}");
    }
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return anyhow::anyhow!("{limit}");
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => anyhow::anyhow!("the plugin trapped: {trap}"),
        None => error.into(),
    }
}

/// A memory size for `--memory-limit`: like a quota size, but neither
/// `none` nor zero, and within the address space.
fn parse_memory_limit(text: &str) -> Result<usize, String> {
    match parse_limit(text)? {
        Limit(Some(bytes)) if bytes > 0 => {
            usize::try_from(bytes).map_err(|_| format!("{text:?} is too large"))
        }
        _ => Err(format!("{text:?} is not a positive size")),
    }
}

/// A positive, finite number of seconds.
fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if !(seconds.is_finite() && seconds > 0.0 && seconds < 1e9) {
        return Err(format!("{text} is not a positive number of seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// As [`parse_seconds`], zero allowed (delete at once).
fn parse_grace(text: &str) -> Result<std::time::Duration, String> {
    match text.parse::<f64>() {
        Ok(0.0) => Ok(std::time::Duration::ZERO),
        _ => parse_seconds(text),
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tblob-partial");
    path.with_file_name(name)
}

/// A progress bar on stderr for transfers over 8 MiB, only on a terminal.
fn progress(size: Option<u64>, verb: &'static str) -> indicatif::ProgressBar {
    let large = size.is_none_or(|s| s > 8 << 20);
    if !large || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match size {
        Some(size) => indicatif::ProgressBar::new(size),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(verb);
    bar
}
