//! `cidmirror dlagent URL OUTPUT`: makepkg's download agent for http and https sources;
//! `cidmirror aur-conf`, which prints the `DLAGENTS` lines that install it; and
//! `cidmirror aur-prefetch`, which fills `SRCDEST` before any helper runs makepkg.
//!
//! makepkg runs the agent as `<agent> %u %o` in `$SRCDEST`; `%o` is `<file>.part`, which
//! makepkg renames to `<file>` on success and then checks against every sum of the
//! PKGBUILD itself (AUR.md). The agent asks the local gateway which cached source has that
//! URL (`/api/v1/resolve?url=`), fetches it by SHA-256 (`/by-hash/sha256/`), checks the size
//! and SHA-256 the gateway named while writing, and moves it to `OUTPUT` only if both hold.
//! If the gateway is down, does not have the URL or sends bytes that fail the check, the
//! agent runs makepkg's own default instead (`curl -qgb "" -fLC - --retry 3 --retry-delay 3
//! -o OUTPUT URL`), so a build never depends on the gateway.
//!
//! Trust: the gateway is the user's own (it checks the publisher's signature of every
//! snapshot and every block against its CID); the agent checks what the gateway sends
//! against what the gateway said, not against the signed snapshot, so a gateway URL on
//! another machine is trusted as a mirror is. makepkg's own checksums are the last word in
//! every case, as with any download agent.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use sha2::Digest;

/// makepkg's default agent for http, https and ftp (pacman's makepkg.conf).
const CURL: &[&str] = &[
    "-qgb",
    "",
    "-fLC",
    "-",
    "--retry",
    "3",
    "--retry-delay",
    "3",
];

/// The gateway used when none is given.
pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:7878/";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The source's URL (makepkg's %u).
    url: String,

    /// Where to write it (makepkg's %o).
    output: PathBuf,

    /// The cidmirror gateway to ask first.
    #[arg(long, default_value = DEFAULT_GATEWAY, env = "CIDMIRROR_GATEWAY")]
    gateway: url::Url,

    /// Never fall back to downloading from the URL itself (for tests and for builds that
    /// must come from verified copies only).
    #[arg(long)]
    no_fallback: bool,
}

#[derive(clap::Args, Debug)]
pub struct ConfArgs {
    /// The gateway the agent asks.
    #[arg(long, default_value = DEFAULT_GATEWAY)]
    gateway: url::Url,
}

/// Prints the makepkg.conf lines that make makepkg (and every AUR helper, which all end in
/// makepkg) fetch http and https sources through the gateway.
pub fn conf(args: ConfArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("the path of this cidmirror")?;
    let exe = exe.display().to_string();
    if exe.contains(char::is_whitespace) {
        anyhow::bail!(
            "this cidmirror is at {exe:?}: makepkg splits DLAGENTS at spaces, install it \
             under a path without any"
        );
    }
    let gw = args.gateway.as_str();
    println!("# cidmirror: http and https sources from the gateway at {gw} first.");
    println!(
        "# Put this in ~/.config/pacman/makepkg.conf (or /etc/makepkg.conf after its DLAGENTS)."
    );
    println!("DLAGENTS=('file::/usr/bin/curl -qgC - -o %o %u'");
    println!(
        "          'ftp::/usr/bin/curl -qgfC - --ftp-pasv --retry 3 --retry-delay 3 -o %o %u'"
    );
    println!("          'http::{exe} dlagent --gateway {gw} %u %o'");
    println!("          'https::{exe} dlagent --gateway {gw} %u %o'");
    println!("          'rsync::/usr/bin/rsync --no-motd -z %u %o'");
    println!("          'scp::/usr/bin/scp -C %u %o')");
    Ok(ExitCode::SUCCESS)
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let shown = cidmirror_schema::text::printable(&args.url);
    // makepkg installs this agent for http and https only; anything else (an argument that
    // curl would read as an option, say) is refused before either path runs.
    if !(args.url.starts_with("http://") || args.url.starts_with("https://")) {
        anyhow::bail!("{shown}: not an http or https URL");
    }
    if args.output.as_os_str() == "-" || args.output.as_os_str().is_empty() {
        anyhow::bail!(
            "the output must be a file name (makepkg's %o), not {:?}",
            args.output
        );
    }
    match from_gateway(&args).await {
        Ok(Some((sha, size))) => {
            eprintln!(
                "cidmirror: {shown}: {size} bytes, sha256 {sha}, from {}",
                args.gateway
            );
            return Ok(ExitCode::SUCCESS);
        }
        Ok(None) => eprintln!("cidmirror: {shown}: not cached at {}", args.gateway),
        Err(e) => eprintln!("cidmirror: {shown}: the gateway at {}: {e:#}", args.gateway),
    }
    if args.no_fallback {
        return Ok(ExitCode::from(1));
    }
    eprintln!("cidmirror: downloading {shown} itself");
    let status = std::process::Command::new("curl")
        .args(CURL)
        .arg("-o")
        .arg(&args.output)
        .arg("--")
        .arg(&args.url)
        .status()
        .context("running curl")?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    })
}

/// The source from the gateway into `args.output`: `Some((sha256, size))` when it is
/// there, `None` when the gateway does not have the URL.
async fn from_gateway(args: &Args) -> anyhow::Result<Option<(String, u64)>> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .read_timeout(Duration::from_secs(60))
        .no_proxy()
        .build()?;
    let mut q = args.gateway.join("api/v1/resolve")?;
    q.query_pairs_mut().append_pair("url", &args.url);
    let resp = client
        .get(q)
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        anyhow::bail!("resolve answered {}", resp.status());
    }
    #[derive(serde::Deserialize)]
    struct Found {
        size: u64,
        sha256: Option<String>,
    }
    let body = resp.bytes().await?;
    if body.len() > 64 << 10 {
        anyhow::bail!("resolve answered {} bytes", body.len());
    }
    let found: Found = serde_json::from_slice(&body).context("resolve's answer")?;
    let Some(sha) = found
        .sha256
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        anyhow::bail!("resolve named no SHA-256");
    };
    by_hash(&client, &args.gateway, &sha, found.size, &args.output).await?;
    Ok(Some((sha, found.size)))
}

/// `/by-hash/sha256/<sha>` from the gateway into `out`: written to a temp file beside it,
/// checked against `size` and `sha` while it arrives, synced, then renamed.
async fn by_hash(
    client: &reqwest::Client,
    gateway: &url::Url,
    sha: &str,
    size: u64,
    out: &Path,
) -> anyhow::Result<()> {
    let url = gateway.join(&format!("by-hash/sha256/{sha}"))?;
    let resp = client.get(url).send().await?;
    if !resp.status().is_success() {
        anyhow::bail!("by-hash answered {}", resp.status());
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // 0644 like curl's output under the usual umask (tempfile's default is 0600): a
    // source in a shared SRCDEST is read by whoever builds.
    let mut tmp = tempfile::Builder::new()
        .prefix(".cidmirror-dlagent.")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&dir)
        .with_context(|| format!("a temporary file in {}", dir.display()))?;
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        n += chunk.len() as u64;
        if n > size {
            anyhow::bail!("more than the {size} bytes the gateway named");
        }
        h.update(&chunk);
        tmp.write_all(&chunk)?;
    }
    let got = hex::encode(h.finalize());
    if n != size || got != sha {
        anyhow::bail!("{n} bytes with sha256 {got}, expected {size} bytes with {sha}");
    }
    tmp.as_file().sync_all()?;
    persist(tmp, out)
}

/// Moves the checked temp file to its final name.
fn persist(tmp: tempfile::NamedTempFile, out: &Path) -> anyhow::Result<()> {
    tmp.persist(out)
        .map_err(|e| anyhow::anyhow!("{}: {}", out.display(), e.error))?;
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct PrefetchArgs {
    /// Package bases, or package directories holding a .SRCINFO (its pkgbase is used).
    #[arg(required = true)]
    what: Vec<PathBuf>,

    /// makepkg's source directory to fill (default: $SRCDEST, else the current directory).
    #[arg(long, env = "SRCDEST")]
    srcdest: Option<PathBuf>,

    /// The gateway to fetch from.
    #[arg(long, default_value = DEFAULT_GATEWAY, env = "CIDMIRROR_GATEWAY")]
    gateway: url::Url,
}

/// `cidmirror aur-prefetch`: fills `SRCDEST` with every cached source of the given bases
/// from the gateway (makepkg then finds them there and downloads nothing), each checked
/// against its size and SHA-256 before it gets its name. A file already there with the
/// right hash is left alone.
pub async fn prefetch(args: PrefetchArgs) -> anyhow::Result<ExitCode> {
    let srcdest = match args.srcdest {
        Some(d) => d,
        None => std::env::current_dir()?,
    };
    std::fs::create_dir_all(&srcdest).with_context(|| format!("{}", srcdest.display()))?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .read_timeout(Duration::from_secs(60))
        .no_proxy()
        .build()?;
    let current = small(&client, args.gateway.join("api/v1/snapshot/current")?).await?;
    #[derive(serde::Deserialize)]
    struct Current {
        root: String,
    }
    let root = serde_json::from_slice::<Current>(&current)
        .context("the gateway's current snapshot")?
        .root;
    let mut failed = 0;
    for what in &args.what {
        let pkgbase = if what.is_dir() {
            let path = what.join(".SRCINFO");
            let text = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
            cidmirror_ingest::aur::parse(&text, &path.display().to_string())?.pkgbase
        } else {
            what.display().to_string()
        };
        let shown = cidmirror_schema::text::printable(&pkgbase);
        if !cidmirror_listing::layout::is_component(&pkgbase) {
            anyhow::bail!("{shown:?} is not a package base");
        }
        let index = args.gateway.join(&format!(
            "ipfs/{root}/{}",
            cidmirror_listing::aur::index_path(&pkgbase)
        ))?;
        let base = match small(&client, index).await {
            Ok(b) => cidmirror_listing::aur::AurBase::parse_index(&b, &format!("aur/{shown}"))?,
            Err(e) => {
                eprintln!("cidmirror: aur/{shown}: not in the gateway's snapshot ({e:#})");
                failed += 1;
                continue;
            }
        };
        for s in &base.sources {
            let out = srcdest.join(&s.file_name);
            let sha = s.file.sha256.to_hex();
            if std::fs::read(&out).is_ok_and(|b| hex::encode(sha2::Sha256::digest(&b)) == sha) {
                eprintln!("cidmirror: {}: already there", out.display());
                continue;
            }
            match by_hash(&client, &args.gateway, &sha, s.file.size, &out).await {
                Ok(()) => eprintln!(
                    "cidmirror: {}: {} bytes from the gateway",
                    out.display(),
                    s.file.size
                ),
                Err(e) => {
                    eprintln!("cidmirror: {}: {e:#}", out.display());
                    failed += 1;
                }
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A small answer (at most 1 MiB) of the gateway.
async fn small(client: &reqwest::Client, url: url::Url) -> anyhow::Result<Vec<u8>> {
    let resp = client
        .get(url.clone())
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    if !resp.status().is_success() {
        anyhow::bail!("{url}: {}", resp.status());
    }
    if resp.content_length().is_some_and(|n| n > 1 << 20) {
        anyhow::bail!("{url}: more than 1 MiB");
    }
    let body = resp.bytes().await?;
    if body.len() > 1 << 20 {
        anyhow::bail!("{url}: more than 1 MiB");
    }
    Ok(body.to_vec())
}
