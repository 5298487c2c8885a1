//! Pages in a real browser: Debian's Chromium, headless, as a person would open them.

use std::{path::Path, process::Command};

use crate::probe::TempDir;

/// The browser: `chromium` (Debian's package), or `MPTCP_CHROMIUM`.
pub fn chromium() -> String {
    std::env::var("MPTCP_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

fn run(args: &[String], url: &str) -> std::process::Output {
    let profile = TempDir::new("chromium");
    // Bounded: coreutils' timeout ends a browser that hangs.
    let mut cmd = Command::new("timeout");
    cmd.args(["60", &chromium()]);
    // As root Chromium runs only without its sandbox; a profile of its own, nothing from the
    // network but the page itself.
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .arg("--virtual-time-budget=5000")
        .args(args)
        .arg(url);
    let o = cmd.output().unwrap_or_else(|e| panic!("{} {url}: {e}", chromium()));
    assert!(o.status.success(), "{} {url}: {}", chromium(), String::from_utf8_lossy(&o.stderr));
    o
}

/// The page's DOM after it loaded, as Chromium serialises it.
pub fn dom(url: &str) -> String {
    String::from_utf8_lossy(&run(&["--dump-dom".into()], url).stdout).into_owned()
}

/// A screenshot of the page (PNG) for a person to look at; its size in bytes.
pub fn screenshot(url: &str, png: &Path, width: u32, height: u32) -> u64 {
    if let Some(dir) = png.parent() {
        std::fs::create_dir_all(dir).expect("screenshot directory");
    }
    let _ = std::fs::remove_file(png);
    run(&[format!("--screenshot={}", png.display()), format!("--window-size={width},{height}")], url);
    let bytes = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
    let head = std::fs::read(png).map(|b| b[..8.min(b.len())].to_vec()).unwrap_or_default();
    assert_eq!(head, b"\x89PNG\r\n\x1a\n", "{} is not a PNG", png.display());
    bytes
}
