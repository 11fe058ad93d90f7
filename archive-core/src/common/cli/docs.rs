//! Man pages and shell completions generated from a program's clap
//! definition, so what `--help` says and what `man` says cannot drift apart.
//! Run at packaging time through `PROGRAM --generate-docs DIR`
//! ([`super::parse`]); scripts/build-deb.sh collects the files.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap_complete::Shell;
use clap_mangen::roff::{roman, Roff};
use clap_mangen::Man;

use crate::common::error::{Error, Result};

/// Writes `DIR/man/<program>.1` (and `<program>-<subcommand>.1` per visible
/// subcommand) and `DIR/completions/{bash/<program>, zsh/_<program>,
/// fish/<program>.fish}`; returns the files written.
pub fn generate(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    let name = cmd.get_name().to_string();
    // The bin name makes subcommands' synopses read `program subcommand`.
    let mut cmd = cmd.disable_help_subcommand(true).bin_name(name.clone());
    cmd.build();
    let mut written = Vec::new();

    let man_dir = dir.join("man");
    create_dir(&man_dir)?;
    let page = Page {
        source: format!("pgarchive {}", cmd.get_version().unwrap_or_default()),
        date: page_date(std::env::var("SOURCE_DATE_EPOCH").ok()),
    };
    man_pages(&cmd, None, &page, &man_dir, &mut written)?;

    for (shell, sub, file) in [
        (Shell::Bash, "bash", name.clone()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let shell_dir = dir.join("completions").join(sub);
        create_dir(&shell_dir)?;
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut text);
        if shell == Shell::Bash {
            text = fix_bash_hyphenated_name(&name, &text);
        }
        let path = shell_dir.join(file);
        write(&path, &text)?;
        written.push(path);
    }
    Ok(written)
}

/// clap_complete 4.6's bash script spells a hyphenated program's
/// subcommand states two ways: the loop that reads the words sets
/// `archive__remote__cmd__subcmd__serve`, the case arms expect
/// `archive__subcmd__remote__subcmd__cmd__subcmd__serve`, so no subcommand
/// option ever completes (clap-rs/clap#6421, #6529; unfixed in 4.6.12).
/// Spell the arms the loop's way.
fn fix_bash_hyphenated_name(name: &str, script: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(script);
    let arms = format!("{}__subcmd__", name.replace('-', "__subcmd__"));
    let state = format!("{}__subcmd__", name.replace('-', "__"));
    text.replace(&arms, &state).into_bytes()
}

/// What every page's title line says besides its name.
struct Page {
    source: String,
    date: String,
}

/// The date in the pages' title line: `SOURCE_DATE_EPOCH` (the
/// reproducible-builds convention; build-deb.sh sets it to the commit's
/// time), else today. Never empty: an empty .TH field shifts the others.
fn page_date(source_date_epoch: Option<String>) -> String {
    let at = source_date_epoch
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_else(chrono::Utc::now);
    at.format("%Y-%m-%d").to_string()
}

/// One page for `cmd`, then one per visible subcommand (recursively).
fn man_pages(
    cmd: &clap::Command,
    parent: Option<&str>,
    title: &Page,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let page = match parent {
        Some(p) => format!("{p}-{}", cmd.get_name()),
        None => cmd.get_name().to_string(),
    };
    let subcommands: Vec<&clap::Command> =
        cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    let mut text = Vec::new();
    render(cmd, &page, parent, title, &subcommands, &mut text)
        .map_err(|e| Error::io("render man page", dir.join(&page), e))?;
    let path = dir.join(format!("{page}.1"));
    write(&path, &text)?;
    written.push(path);
    for sub in subcommands {
        man_pages(sub, Some(&page), title, dir, written)?;
    }
    Ok(())
}

/// clap_mangen's sections, but the `after_help` text (usage examples,
/// configuration keys, exit codes) is laid out by hand with aligned
/// columns, so it goes in no-fill mode instead of clap_mangen's reflowed
/// EXTRA section, its exit codes under the customary EXIT STATUS heading.
fn render(
    cmd: &clap::Command,
    page: &str,
    parent: Option<&str>,
    title: &Page,
    subcommands: &[&clap::Command],
    w: &mut dyn Write,
) -> std::io::Result<()> {
    // A subcommand's page is named after the full command (git-commit
    // style); its synopsis already says `program subcommand`.
    let named = cmd.clone().display_name(page.to_string());
    let man = Man::new(named.clone())
        .title(page.to_uppercase())
        .date(&title.date)
        .source(&title.source)
        .manual("pgarchive");
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if named.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if !subcommands.is_empty() {
        man.render_subcommands_section(w)?;
    }
    let extra = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(|t| t.to_string())
        .unwrap_or_default();
    let (details, exit_status) = split_exit_codes(&extra);
    let mut roff = Roff::default();
    for (heading, text) in [("DETAILS", &details), ("EXIT STATUS", &exit_status)] {
        if text.trim().is_empty() {
            continue;
        }
        roff.control("SH", [heading]).control("nf", []);
        for line in text.trim_end().lines() {
            // "Exit codes:" alone repeats the heading; "Exit codes: 0 ok;…" keeps its list.
            if line.trim_end() == "Exit codes:" {
                continue;
            }
            roff.text([roman(line.strip_prefix("Exit codes: ").unwrap_or(line))]);
        }
        roff.control("fi", []);
    }
    let mut related: Vec<String> = parent.map(|p| format!("{p}(1)")).into_iter().collect();
    related.extend(
        subcommands
            .iter()
            .map(|s| format!("{page}-{}(1)", s.get_name())),
    );
    if !related.is_empty() {
        roff.control("SH", ["SEE ALSO"])
            .text([roman(related.join(", "))]);
    }
    roff.to_writer(w)?;
    // Subcommands carry no version of their own (the source line has it).
    if cmd.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}

/// The after_help text without, and then with only, its paragraph that
/// starts with "Exit codes" (the paragraph ends at a blank line).
fn split_exit_codes(text: &str) -> (String, String) {
    let start = if text.starts_with("Exit codes") {
        0
    } else {
        match text.find("\nExit codes") {
            Some(at) => at + 1,
            None => return (text.to_string(), String::new()),
        }
    };
    let end = text[start..].find("\n\n").map_or(text.len(), |n| start + n);
    let details = format!("{}{}", &text[..start], text[end..].trim_start_matches('\n'));
    (details, text[start..end].to_string())
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))
}

fn write(path: &Path, content: &[u8]) -> Result<()> {
    std::fs::write(path, content).map_err(|e| Error::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};

    const AFTER: &str =
        "Behaviour:\n  .dot  keeps   its columns\n\nSecond paragraph.\n\nExit codes:\n  0  done\n  4  conflict\n\nA last word.";

    /// A program shaped like ours: global config options, a subcommand
    /// with options, an after_help with aligned columns and exit codes.
    #[derive(Parser)]
    #[command(name = "demo-cmd", version, after_help = AFTER)]
    struct Demo {
        #[command(flatten)]
        config: crate::common::cli::ConfigArgs,
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// Serve requests.
        Serve {
            /// The role of the key.
            #[arg(long)]
            role: String,
        },
        /// Internal.
        #[command(hide = true)]
        Secret,
    }

    /// Asserts that `text` contains `needle`, showing the whole text if not.
    fn has(text: &str, needle: &str) {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }

    fn generated() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(Demo::command(), dir.path()).unwrap();
        (dir, files)
    }

    #[test]
    fn writes_a_page_per_visible_command_and_three_completions() {
        let (dir, files) = generated();
        let mut names: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "completions/bash/demo-cmd",
                "completions/fish/demo-cmd.fish",
                "completions/zsh/_demo-cmd",
                "man/demo-cmd-serve.1",
                "man/demo-cmd.1",
            ]
        );
        let bash = std::fs::read_to_string(dir.path().join("completions/bash/demo-cmd")).unwrap();
        assert!(bash.contains("complete -F _demo__cmd"), "{bash}");
        assert!(bash.contains("--config"), "{bash}");
        // The state the word loop sets is the one a case arm matches.
        assert!(bash.contains("cmd=\"demo__cmd__subcmd__serve\""), "{bash}");
        assert!(
            bash.contains("\n        demo__cmd__subcmd__serve)\n"),
            "{bash}"
        );
        assert!(!bash.contains("demo__subcmd__cmd"), "{bash}");
    }

    #[test]
    fn man_page_keeps_after_help_columns_and_names_exit_status() {
        let (dir, _) = generated();
        let page = std::fs::read_to_string(dir.path().join("man/demo-cmd.1")).unwrap();
        let date = page_date(std::env::var("SOURCE_DATE_EPOCH").ok());
        has(
            &page,
            &format!(".TH DEMO-CMD 1 {date} \"pgarchive 0.1.0\" pgarchive\n"),
        );
        has(&page, "\\fB\\-\\-config\\fR \\fI<FILE>\\fR");
        let details = page.find(".SH DETAILS\n.nf\n").expect("no-fill DETAILS");
        let status = page
            .find(".SH \"EXIT STATUS\"\n.nf\n")
            .expect("no-fill EXIT STATUS");
        assert!(details < status, "{page}");
        assert!(
            page[details..status].contains(
                "\n  .dot  keeps   its columns\n\nSecond paragraph.\n\nA last word.\n.fi\n"
            ),
            "{page}"
        );
        assert!(page[status..].contains("\n  4  conflict\n.fi\n"), "{page}");
        assert!(
            !page[status..].contains("Exit codes"),
            "the heading says it: {page}"
        );
        has(&page, ".SH \"SEE ALSO\"\ndemo\\-cmd\\-serve(1)\n");
        assert!(
            !page.to_lowercase().contains("secret"),
            "hidden subcommand: {page}"
        );

        let sub = std::fs::read_to_string(dir.path().join("man/demo-cmd-serve.1")).unwrap();
        has(
            &sub,
            &format!(".TH DEMO-CMD-SERVE 1 {date} \"pgarchive 0.1.0\" pgarchive\n"),
        );
        has(&sub, "demo\\-cmd\\-serve \\- Serve requests");
        has(&sub, ".SH SYNOPSIS\n\\fBdemo\\-cmd serve\\fR");
        has(&sub, "\\fB\\-\\-role\\fR");
        has(&sub, ".SH \"SEE ALSO\"\ndemo\\-cmd(1)\n");
    }

    #[test]
    fn the_date_is_source_date_epoch_when_set() {
        assert_eq!(page_date(Some("86400".into())), "1970-01-02");
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        assert_eq!(page_date(None), today);
        assert_eq!(page_date(Some("not a number".into())), today);
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, "").unwrap();
        let err = generate(Demo::command(), &file).unwrap_err();
        assert!(err.to_string().contains("plain-file"), "{err}");
    }
}
