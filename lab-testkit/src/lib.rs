//! Test support: a real `redis-server` on a free loopback port, one per test,
//! and worker binaries built with a patch applied. Students need not edit this file.
//!
//! Every test that touches Redis starts its own server, so tests never share
//! data and nothing ever needs FLUSHALL. The server dies with the value.
//! [`RedisOptions`] adds what fault tests need: persistence (an append-only
//! file that survives [`RedisServer::restart`]) and a password.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a test's `redis-server` runs.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Append-only persistence (`appendfsync everysec`, as `./lab` runs it), so
    /// the data survives [`RedisServer::restart`].
    pub persistent: bool,
    /// `requirepass`: clients must authenticate (`redis://:<password>@...`).
    pub password: Option<String>,
}

/// A `redis-server` child process listening on `127.0.0.1:<port>`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    options: RedisOptions,
}

impl RedisServer {
    /// Starts `redis-server` (found on PATH) on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(RedisOptions::default())
    }

    /// [`RedisServer::start`] with persistence and/or a password.
    pub fn start_with(options: RedisOptions) -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("lab-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create redis temp dir");
            let mut server = RedisServer {
                child: None,
                port,
                dir,
                options: options.clone(),
            };
            if server.launch() {
                return server;
            }
            // Lost a race for the port: try another one.
            server.kill();
        }
        panic!("could not start redis-server on a free port");
    }

    fn launch(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(&self.dir);
        if self.options.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "everysec"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found on PATH: install it (apt-get install redis-server)");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(10))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `redis://127.0.0.1:<port>`, or `redis://:<password>@127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        match &self.options.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Stops the server the way `./lab down` does (SIGTERM: a clean shutdown that
    /// writes the append-only file) and waits until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, over the same data folder.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        assert!(
            self.launch(),
            "redis-server did not come back on port {}",
            self.port
        );
    }

    /// [`stop`](RedisServer::stop), then [`start_again`](RedisServer::start_again).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => {}
                _ => return false,
            }
            if ping(self.port, self.options.password.as_deref()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every key matching `pattern` (SCAN, never KEYS), sorted.
pub async fn scan_keys(
    redis: &mut impl redis::aio::ConnectionLike,
    pattern: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .query_async(redis)
            .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            keys.sort();
            return Ok(keys);
        }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

fn ping(port: u16, password: Option<&str>) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if let Some(password) = password {
        let mut ok = [0u8; 5];
        let auth = format!("AUTH {password}\r\n");
        if !(stream.write_all(auth.as_bytes()).is_ok()
            && stream.read_exact(&mut ok).is_ok()
            && &ok == b"+OK\r\n")
        {
            return false;
        }
    }
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// The repository root (the folder with the workspace's `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The worker with `exercise`'s reference solution (`exercises/NN-name/solution.patch`)
/// applied and built, once per test process and exercise. This proves on every
/// run that the patch still applies and works.
pub fn solution_worker(exercise: lab_schema::Exercise) -> PathBuf {
    solution_binary(exercise)
}

/// The program `exercise`'s student file is built into (the worker, or the API
/// for exercise 4), with its reference solution applied and built, once per
/// test process and exercise.
pub fn solution_binary(exercise: lab_schema::Exercise) -> PathBuf {
    static BINARIES: std::sync::Mutex<Vec<(lab_schema::Exercise, PathBuf)>> =
        std::sync::Mutex::new(Vec::new());
    if let Some((_, path)) = BINARIES
        .lock()
        .unwrap()
        .iter()
        .find(|(e, _)| *e == exercise)
    {
        return path.clone();
    }
    let path = patched_binary(exercise.info().component, &exercise.solution_patch());
    BINARIES.lock().unwrap().push((exercise, path.clone()));
    path
}

/// The compiler's errors when `component` is built with `patch` applied (a
/// `fixtures/compile-*.patch`), as a student sees them; `None` when it builds.
///
/// The errors are kept in the temp folder under a hash of the sources, as the
/// binaries are: the handout test and the fixture test ask for the same ones.
pub fn build_errors(component: lab_schema::exercise::Component, patch: &str) -> Option<String> {
    let patched = Patched::apply(Some(patch));
    let kept = std::env::temp_dir().join(format!(
        "lab-{}-errors-{:016x}.txt",
        component.package(),
        tree_hash(&patched.copy)
    ));
    if let Ok(errors) = std::fs::read_to_string(&kept) {
        return Some(errors);
    }
    let (built, stderr) = patched.build(&[component.package()], Profile::Debug);
    if built {
        return None;
    }
    // Written, then renamed into place: never a half-written file under the name.
    let partial = kept.with_extension(format!("partial-{}", std::process::id()));
    if std::fs::write(&partial, &stderr).is_ok() {
        let _ = std::fs::rename(&partial, &kept);
    }
    Some(stderr)
}

/// `target/patched-worker/`, where scratch copies are built, locked for this
/// process until the file returned is dropped (builds from parallel test
/// processes take turns).
///
/// Its debug build starts from the crates.io dependencies the workspace's own
/// test build compiled: on a clean clone it would otherwise compile them all a
/// second time (about a minute on 2 cores). They are the same units (the same
/// crates, versions, features and profile), which cargo finds fresh; the
/// workspace's own crates are not reused, since the copy's have other paths.
fn locked_build_dir() -> (std::fs::File, PathBuf) {
    let target = workspace_root().join("target");
    let build_dir = target.join("patched-worker");
    std::fs::create_dir_all(&build_dir).unwrap();
    let lock = std::fs::File::create(build_dir.join("lock")).unwrap();
    lock.lock().unwrap();
    let debug = build_dir.join("target").join("debug");
    if !debug.exists() && target.join("debug").join(".fingerprint").is_dir() {
        seed_dependencies(&target.join("debug"), &debug);
    }
    (lock, build_dir)
}

/// Puts the compiled dependencies of the debug build `from` into the empty
/// debug folder `to`: the libraries hard-linked (rustc replaces an output file,
/// it does not write into it), their dep-info, fingerprints and build-script
/// outputs copied with their modification times.
/// Best effort: what cannot be linked or copied is compiled as usual.
fn seed_dependencies(from: &Path, to: &Path) {
    /// Copies a file with its modification time: cargo compares the times of
    /// a unit's fingerprint and its dependencies' outputs.
    fn copy_file(from: &Path, to: &Path) {
        let modified = std::fs::metadata(from).and_then(|m| m.modified());
        if std::fs::copy(from, to).is_ok()
            && let Ok(modified) = modified
            && let Ok(file) = std::fs::File::options().write(true).open(to)
        {
            let _ = file.set_modified(modified);
        }
    }
    /// Copies the folder `from` to `to`, with what it holds.
    fn copy_tree(from: &Path, to: &Path) {
        let _ = std::fs::create_dir_all(to);
        for entry in std::fs::read_dir(from).into_iter().flatten().flatten() {
            let (source, dest) = (entry.path(), to.join(entry.file_name()));
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => copy_tree(&source, &dest),
                Ok(kind) if kind.is_file() => copy_file(&source, &dest),
                _ => {}
            }
        }
    }
    // The libraries (`lib*.rlib`, `.rmeta`, `.so`) and their dep-info, not the
    // test and program binaries.
    let _ = std::fs::create_dir_all(to.join("deps"));
    for entry in std::fs::read_dir(from.join("deps"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        let dest = to.join("deps").join(&name);
        // Dep-info is copied; a library is linked, or copied where it cannot be.
        let copied = name_text.ends_with(".d")
            || (name_text.starts_with("lib") && std::fs::hard_link(entry.path(), &dest).is_err());
        if copied {
            copy_file(&entry.path(), &dest);
        }
    }
    copy_tree(&from.join(".fingerprint"), &to.join(".fingerprint"));
    copy_tree(&from.join("build"), &to.join("build"));
}

/// How a scratch copy is built: `Debug` for tests (quick to build), `Release`
/// for the benchmarks (as `./lab` and the images run the worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

/// The scratch copy of the workspace with one patch (or none) applied, locked
/// for this process until it is dropped.
struct Patched {
    _lock: std::fs::File,
    build_dir: PathBuf,
    copy: PathBuf,
}

impl Patched {
    fn apply(patch: Option<&str>) -> Patched {
        Patched::with(patch, &[])
    }

    /// The copy with `patch` applied (if any), then `files` (paths from the
    /// repository root, and their content) written over it.
    fn with(patch: Option<&str>, files: &[(String, Vec<u8>)]) -> Patched {
        let root = workspace_root();
        let (lock, build_dir) = locked_build_dir();

        // Start from the starter every time: the copy mirrors the workspace (what a
        // previous patch changed, added or removed is undone), minus build output.
        let copy = build_dir.join("workspace");
        mirror_tree(&root, &copy, true);
        if let Some(patch) = patch {
            let applied = Command::new("git")
                .arg("apply")
                .arg(root.join(patch))
                .current_dir(&copy)
                // The copy sits inside this repository's target/: stop git from finding the
                // outer repository, where `git apply` would silently skip the paths.
                .env("GIT_CEILING_DIRECTORIES", &build_dir)
                .status()
                .expect("git is needed to apply the patch");
            assert!(
                applied.success(),
                "{patch} no longer applies to the starter"
            );
        }
        for (path, content) in files {
            std::fs::write(copy.join(path), content).unwrap();
        }
        let changed = changed_files(&root, &copy);
        assert!(
            patch.is_none() || !changed.is_empty(),
            "git apply {patch:?} changed nothing"
        );
        Patched {
            _lock: lock,
            build_dir,
            copy,
        }
    }

    /// Builds `packages` in the copy (in one cargo run): whether they built,
    /// and what cargo printed.
    fn build(&self, packages: &[&str], profile: Profile) -> (bool, String) {
        let out = self.cargo_build(packages, profile).output().expect("cargo");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// [`Patched::build`] within `limit`: `None` when cargo was still
    /// building then (it is killed, with the compilers it started).
    fn build_within(
        &self,
        packages: &[&str],
        profile: Profile,
        limit: Duration,
    ) -> Option<(bool, String)> {
        use std::os::unix::process::CommandExt;
        let errors = self.build_dir.join("cargo-errors.txt");
        let mut child = self
            .cargo_build(packages, profile)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&errors).unwrap())
            // Its own process group: a kill reaches rustc too.
            .process_group(0)
            .spawn()
            .expect("cargo");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("cargo") {
                let stderr = std::fs::read_to_string(&errors).unwrap_or_default();
                return Some((status.success(), stderr));
            }
            if Instant::now() >= deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cargo_build(&self, packages: &[&str], profile: Profile) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command.args(["build", "--quiet", "--offline", "--color", "never"]);
        for package in packages {
            command.args(["-p", package]);
        }
        if profile == Profile::Release {
            command.arg("--release");
        }
        command
            .arg("--target-dir")
            .arg(self.build_dir.join("target"))
            .current_dir(&self.copy);
        command
    }
}

/// The worker binary built from a copy of the workspace with `patch` (a path
/// relative to the repository root, e.g. `exercises/01-duplicate-delivery/solution.patch`)
/// applied with `git apply`. Returns a private copy of the binary.
///
/// Every patch is built in ONE scratch copy of the workspace with ONE target
/// folder (`target/patched-worker/`): only the files a patch changes differ
/// between two builds, so each one recompiles just the crates it touches. Builds
/// from parallel test processes take turns (a file lock). Panics with a clear
/// message when the patch no longer applies or the patched worker does not build.
pub fn patched_worker(patch: &str) -> PathBuf {
    built_worker(Some(patch), Profile::Debug)
}

/// [`patched_worker`] for the program `component` (the API's exercise is built into the API).
pub fn patched_binary(component: lab_schema::exercise::Component, patch: &str) -> PathBuf {
    built_binary(component, Some(patch), Profile::Debug)
}

/// The worker built in the scratch copy with `patch` applied (`None`: the
/// starter as it is in this folder), with `profile`; a private copy of the binary.
pub fn built_worker(patch: Option<&str>, profile: Profile) -> PathBuf {
    built_binary(lab_schema::exercise::Component::Worker, patch, profile)
}

/// [`built_worker`] for the program `component`.
pub fn built_binary(
    component: lab_schema::exercise::Component,
    patch: Option<&str>,
    profile: Profile,
) -> PathBuf {
    let [binary] = built_programs([component.package()], patch, profile);
    binary
}

/// The programs of `packages` (their binaries have the package's name), built
/// together from the scratch copy with `patch` applied: private copies, in order.
pub fn built_programs<const N: usize>(
    packages: [&str; N],
    patch: Option<&str>,
    profile: Profile,
) -> [PathBuf; N] {
    let patched = Patched::apply(patch);
    // The binary is named after every source file of the patched copy: the same
    // sources give the same name, so a binary built before (by an earlier test
    // run or benchmark) is used again instead of being rebuilt, and a later build
    // never replaces a binary a running worker uses.
    let name = patch
        .and_then(|patch| Path::new(patch).file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "starter".to_string());
    let suffix = match profile {
        Profile::Debug => "",
        Profile::Release => "-release",
    };
    let binaries = patched.binaries(packages, &format!("{name}{suffix}"));
    if binaries.iter().all(|binary| binary.exists()) {
        return binaries;
    }
    let (built, stderr) = patched.build(&packages, profile);
    assert!(
        built,
        "{packages:?} patched with {patch:?} do not build:\n{stderr}"
    );
    patched.keep(&packages, &binaries, profile);
    binaries
}

/// Why [`built_with_files`] built nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotBuilt {
    /// The compiler's output (its errors).
    Errors(String),
    /// Cargo was still building after this long.
    TimedOut(Duration),
}

/// The programs of `packages`, built (debug) from the scratch copy with
/// `files` (paths from the repository root, and their content: a student's
/// submission) written over the starter, within `limit`: private copies, in
/// order, named `lab-<package>-<name>-<hash of the sources>` (the same sources
/// are built once). Builds of one machine take turns, as [`patched_binary`]'s do.
pub fn built_with_files<const N: usize>(
    packages: [&str; N],
    files: &[(String, Vec<u8>)],
    name: &str,
    limit: Duration,
) -> Result<[PathBuf; N], NotBuilt> {
    let patched = Patched::with(None, files);
    let binaries = patched.binaries(packages, name);
    if binaries.iter().all(|binary| binary.exists()) {
        return Ok(binaries);
    }
    match patched.build_within(&packages, Profile::Debug, limit) {
        None => Err(NotBuilt::TimedOut(limit)),
        Some((false, stderr)) => Err(NotBuilt::Errors(stderr)),
        Some((true, _)) => {
            patched.keep(&packages, &binaries, Profile::Debug);
            Ok(binaries)
        }
    }
}

impl Patched {
    /// Where the programs of `packages` built from this copy are kept:
    /// `lab-<package>-<name>-<hash of every source>` in the temp folder (the
    /// same sources give the same names: built once).
    fn binaries<const N: usize>(&self, packages: [&str; N], name: &str) -> [PathBuf; N] {
        let hash = tree_hash(&self.copy);
        packages
            .map(|package| std::env::temp_dir().join(format!("lab-{package}-{name}-{hash:016x}")))
    }

    /// Copies the built programs of `packages` to `binaries`.
    fn keep(&self, packages: &[&str], binaries: &[PathBuf], profile: Profile) {
        let folder = match profile {
            Profile::Debug => "debug",
            Profile::Release => "release",
        };
        for (package, binary) in packages.iter().zip(binaries) {
            // Copied, then renamed into place: never a half-written binary under the name.
            let partial = binary.with_extension(format!("partial-{}", std::process::id()));
            std::fs::copy(
                self.build_dir.join("target").join(folder).join(package),
                &partial,
            )
            .unwrap();
            std::fs::rename(&partial, binary).unwrap();
        }
    }
}

/// A hash of every file of the scratch copy (paths and contents).
fn tree_hash(copy: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files_of(copy) {
        std::fs::read(copy.join(&file)).ok().hash(&mut hasher);
        file.hash(&mut hasher);
    }
    hasher.finish()
}

/// What is not copied into the scratch workspace: build output, the VCS, and
/// the lab's own state and output folders.
const NOT_COPIED: [&str; 4] = ["target", ".git", ".lab", "lab-output"];

/// Makes `to` hold what `from` holds: copies files whose content differs
/// (leaving unchanged ones untouched, so cargo sees them as up to date) and
/// removes what `from` does not have.
fn mirror_tree(from: &Path, to: &Path, top: bool) {
    if from.is_dir() {
        if to.is_file() {
            std::fs::remove_file(to).unwrap();
        }
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(to).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if (top && NOT_COPIED.iter().any(|n| name == *n)) || from.join(&name).exists() {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            } else {
                std::fs::remove_file(path).unwrap();
            }
        }
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if top && NOT_COPIED.iter().any(|n| name == *n) {
                continue;
            }
            mirror_tree(&entry.path(), &to.join(&name), false);
        }
    } else {
        let content = std::fs::read(from).unwrap();
        if std::fs::read(to).ok().as_deref() != Some(&content[..]) {
            if to.is_dir() {
                std::fs::remove_dir_all(to).unwrap();
            }
            std::fs::write(to, content).unwrap();
        }
    }
}

/// The files (relative paths) whose content differs between the workspace and the copy.
fn changed_files(root: &Path, copy: &Path) -> Vec<PathBuf> {
    files_of(copy)
        .into_iter()
        .filter(|path| std::fs::read(root.join(path)).ok() != std::fs::read(copy.join(path)).ok())
        .collect()
}

/// Every file under `dir` (relative paths, sorted), minus what is not copied.
fn files_of(dir: &Path) -> Vec<PathBuf> {
    files_below(
        dir,
        |folder, name| folder.as_os_str().is_empty() && NOT_COPIED.iter().any(|n| name == *n),
        usize::MAX,
    )
}

/// Every regular file under `dir` (relative paths, sorted), at most `limit`:
/// never entering an entry `skip` names (given the folder it is in, relative,
/// and its name), nor following a symbolic link.
pub fn files_below(
    dir: &Path,
    skip: impl Fn(&Path, &std::ffi::OsStr) -> bool,
    limit: usize,
) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if skip(&rel, &name) {
                continue;
            }
            let path = rel.join(&name);
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(path),
                Ok(kind) if kind.is_file() => files.push(path),
                _ => {}
            }
            if files.len() >= limit {
                break;
            }
        }
        if files.len() >= limit {
            break;
        }
    }
    files.sort();
    files
}

/// The programs of `packages` built (debug) from another copy of the lab in
/// `dir` (a student copy, say), in the scratch build's target folder, so the
/// dependencies are not compiled again: private copies of the binaries, in order.
pub fn built_from<const N: usize>(dir: &Path, packages: [&str; N]) -> [PathBuf; N] {
    let (_lock, build_dir) = locked_build_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "--quiet",
        "--offline",
        "--locked",
        "--color",
        "never",
    ]);
    for package in packages {
        command.args(["-p", package]);
    }
    let out = command
        .arg("--target-dir")
        .arg(build_dir.join("target"))
        .current_dir(dir)
        .output()
        .expect("cargo");
    assert!(
        out.status.success(),
        "{packages:?} do not build in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // A new name per build: a running process keeps its binary.
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let build = BUILDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    packages.map(|package| {
        let binary =
            std::env::temp_dir().join(format!("lab-{package}-copy-{}-{build}", std::process::id()));
        std::fs::copy(
            build_dir.join("target").join("debug").join(package),
            &binary,
        )
        .unwrap();
        binary
    })
}
