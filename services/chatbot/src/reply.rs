//! Platform-neutral replies and their rendering: Slack Block Kit, Discord embeds and
//! components, plain text. Layout lives in askama templates; this module decides what fits
//! each platform's limits and escapes every piece of text that came from users or the cluster.

use askama::Template;

/// How a reply reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tone {
    /// An answer.
    #[default]
    Info,
    /// Something went as asked.
    Good,
    /// Needs attention.
    Warn,
    /// Refused or failed.
    Bad,
}

/// A piece of the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Prose (escaped when rendered).
    Text(String),
    /// Monospace: tables, diffs, manifests (kept verbatim in a code block).
    Code {
        /// The text.
        text: String,
        /// The file name for the whole text when it does not fit (e.g. `diff.txt`).
        file: String,
    },
}

/// A button on a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Button {
    /// Its label.
    pub label: String,
    /// What it does: `approve`, `reject`, `redo`.
    pub action: String,
    /// The approval id it acts on.
    pub value: String,
    /// Colour.
    pub style: ButtonStyle,
}

/// Button colours both platforms have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ButtonStyle {
    /// Green.
    Good,
    /// Red.
    Danger,
    /// Grey.
    Plain,
}

impl Button {
    /// Slack's `style` (absent: default grey).
    pub fn slack_style(&self) -> Option<&'static str> {
        match self.style {
            ButtonStyle::Good => Some("primary"),
            ButtonStyle::Danger => Some("danger"),
            ButtonStyle::Plain => None,
        }
    }

    /// Discord's button style number.
    pub fn discord_style(&self) -> u8 {
        match self.style {
            ButtonStyle::Good => 3,
            ButtonStyle::Danger => 4,
            ButtonStyle::Plain => 2,
        }
    }

    /// Discord's `custom_id`: `action:value` (at most 100 characters; ids are short).
    pub fn custom_id(&self) -> String {
        format!("{}:{}", self.action, self.value)
    }
}

/// A file sent with a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    /// Its name.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A reply, before it is rendered for a platform.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// One line.
    pub title: String,
    /// How it reads.
    pub tone: Tone,
    /// Short facts (`Requester`, `Target`, ...).
    pub fields: Vec<(String, String)>,
    /// The body.
    pub parts: Vec<Part>,
    /// Small print under the body.
    pub notes: Vec<String>,
    /// Buttons.
    pub buttons: Vec<Button>,
    /// A picture (PNG).
    pub image: Option<File>,
    /// Only the requester sees it.
    pub ephemeral: bool,
}

impl Reply {
    /// A reply with a title.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            ..Self::default()
        }
    }

    /// A refusal only the requester sees.
    pub fn refusal(title: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            tone: Tone::Bad,
            parts: vec![Part::Text(why.into())],
            ephemeral: true,
            ..Self::default()
        }
    }

    /// Adds prose.
    pub fn text(mut self, t: impl Into<String>) -> Self {
        self.parts.push(Part::Text(t.into()));
        self
    }

    /// Adds a code block whose whole text is attached as `file` when it does not fit.
    pub fn code(mut self, text: impl Into<String>, file: &str) -> Self {
        self.parts.push(Part::Code {
            text: text.into(),
            file: file.into(),
        });
        self
    }

    /// Adds a fact.
    pub fn field(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.fields.push((k.into(), v.into()));
        self
    }

    /// Adds a note.
    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.notes.push(n.into());
        self
    }

    /// The plain-text rendering (notification fallback, terminals, logs).
    pub fn plain(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Code { text, .. } => text.clone(),
            })
            .collect();
        PlainText {
            title: &self.title,
            fields: &self.fields,
            parts: &parts,
            notes: &self.notes,
        }
        .render()
        .unwrap_or_else(|_| self.title.clone())
    }
}

#[derive(Template)]
#[template(path = "text/message.txt", escape = "none")]
struct PlainText<'a> {
    title: &'a str,
    fields: &'a [(String, String)],
    parts: &'a [String],
    notes: &'a [String],
}

/// Cuts `text` to at most `max` characters at a line end, returning the kept text and how many
/// lines were left out.
fn cut_lines(text: &str, max: usize) -> (String, usize) {
    if text.chars().count() <= max {
        return (text.to_owned(), 0);
    }
    let mut out = String::new();
    let mut kept = 0;
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines {
        if out.chars().count() + l.chars().count() + 1 > max {
            break;
        }
        out.push_str(l);
        out.push('\n');
        kept += 1;
    }
    if kept == 0 {
        // One very long line: cut inside it.
        out = text.chars().take(max).collect();
        kept = 1;
    }
    (out, lines.len().saturating_sub(kept).max(1))
}

fn cut_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

// --- Slack ---

/// Escapes text for Slack mrkdwn: `& < >` as entities (no mentions, links or channel pings
/// can be smuggled in) and the formatting marks broken with a zero-width space so names like
/// `*_web_*` show as typed.
pub fn slack_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '*' | '_' | '~' | '`' => {
                out.push('\u{200B}');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Escapes text for a Slack code block: entities, and no run of backticks (of any length) can
/// close the block early.
fn slack_code(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('`', "`\u{200B}")
}

/// Slack's limits (Block Kit).
pub mod slack_limits {
    /// Blocks in a message.
    pub const BLOCKS: usize = 50;
    /// Characters of a section's text.
    pub const SECTION_TEXT: usize = 3000;
    /// Characters of a header.
    pub const HEADER: usize = 150;
    /// Fields in a section.
    pub const FIELDS: usize = 10;
    /// Characters of a field.
    pub const FIELD: usize = 2000;
    /// Characters of a button `value`.
    pub const BUTTON_VALUE: usize = 2000;
}

/// A reply rendered for Slack: the message JSON (`text` + `blocks`) and files to upload.
#[derive(Clone, Debug)]
pub struct SlackMessage {
    /// `{"text": ..., "blocks": [...]}`.
    pub json: String,
    /// Files to upload next to it (the picture, whole texts that were cut).
    pub files: Vec<File>,
    /// Only the requester sees it.
    pub ephemeral: bool,
}

#[derive(Template)]
#[template(path = "slack/message.json", escape = "none")]
struct SlackTemplate<'a> {
    fallback: &'a str,
    title: &'a str,
    fields: &'a [String],
    sections: &'a [String],
    notes: &'a [String],
    buttons: &'a [Button],
}

const TEXT_CUT: &str = "(text cut to fit; the whole text is attached as message.txt)";

const TRUNCATED: &str = "(cut to fit; the whole text is attached as";

/// Renders for Slack: one section per text part, code parts in one block each (cut at a line
/// end to fit, the whole text attached), at most 50 blocks.
pub fn slack(reply: &Reply) -> SlackMessage {
    use slack_limits as l;
    let mut files = Vec::new();
    let mut sections = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    // Header, fields, notes and actions take at most four blocks and one note per cut part.
    let budget = l::BLOCKS - 4 - reply.notes.len().min(5);
    for p in &reply.parts {
        if sections.len() + notes.len() >= budget.saturating_sub(1) {
            notes.push("(more was left out to fit Slack's message limits)".into());
            break;
        }
        match p {
            Part::Text(t) => {
                let escaped = slack_escape(t);
                if escaped.chars().count() > l::SECTION_TEXT {
                    notes.push(TEXT_CUT.into());
                    files.push(File {
                        name: "message.txt".into(),
                        bytes: t.clone().into_bytes(),
                    });
                }
                sections.push(cut_chars(&escaped, l::SECTION_TEXT));
            }
            Part::Code { text, file } => {
                let fence = 8;
                let escaped = slack_code(text);
                let (kept, left) = cut_lines(&escaped, l::SECTION_TEXT - fence);
                sections.push(format!("```\n{kept}```"));
                if left > 0 {
                    notes.push(format!(
                        "{left} more lines {TRUNCATED} {})",
                        slack_escape(file)
                    ));
                    files.push(File {
                        name: file.clone(),
                        bytes: text.clone().into_bytes(),
                    });
                }
            }
        }
    }
    notes.extend(
        reply
            .notes
            .iter()
            .take(5)
            .map(|n| cut_chars(&slack_escape(n), l::SECTION_TEXT)),
    );
    let fields: Vec<String> = reply
        .fields
        .iter()
        .take(l::FIELDS)
        .map(|(k, v)| {
            cut_chars(
                &format!("*{}*\n{}", slack_escape(k), slack_escape(v)),
                l::FIELD,
            )
        })
        .collect();
    if let Some(img) = &reply.image {
        files.insert(0, img.clone());
    }
    // The fallback text is mrkdwn too (notifications): no pings or links from user data.
    let fallback = cut_chars(&slack_code(&reply.plain()), 3000);
    let json = SlackTemplate {
        fallback: &fallback,
        title: &cut_chars(&reply.title, l::HEADER),
        fields: &fields,
        sections: &sections,
        notes: &notes,
        buttons: &reply.buttons,
    }
    .render()
    .unwrap_or_else(|e| format!("{{\"text\": {}}}", serde_json::Value::from(e.to_string())));
    SlackMessage {
        json,
        files,
        ephemeral: reply.ephemeral,
    }
}

/// The Slack modal asking for a manifest.
#[derive(Template)]
#[template(path = "slack/modal.json", escape = "none")]
pub struct SlackModal<'a> {
    /// Travels back with the submission (JSON: kind, channel, response URL).
    pub metadata: &'a str,
    /// The modal's title (at most 24 characters).
    pub title: &'a str,
    /// The input's label.
    pub label: &'a str,
    /// Longest manifest accepted (Slack allows 3,000 in one input).
    pub max_len: usize,
}

// --- Discord ---

/// Escapes Discord markdown with backslashes and defuses `@everyone`-style pings (every
/// message also carries `allowed_mentions: {parse: []}`).
pub fn discord_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '<' | '#' | '[' | ']' | '(' | ')' | '-' => {
                out.push('\\');
                out.push(c);
            }
            '@' => {
                out.push('@');
                out.push('\u{200B}');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Text for a Discord code block: no run of backticks can close it.
fn discord_code(s: &str) -> String {
    s.replace('`', "`\u{200B}")
}

/// Discord's limits.
pub mod discord_limits {
    /// Characters of a message's content.
    pub const CONTENT: usize = 2000;
    /// Characters of an embed title.
    pub const TITLE: usize = 256;
    /// Characters of an embed description.
    pub const DESCRIPTION: usize = 4096;
    /// Fields of an embed.
    pub const FIELDS: usize = 25;
    /// Characters of a field name.
    pub const FIELD_NAME: usize = 256;
    /// Characters of a field value.
    pub const FIELD_VALUE: usize = 1024;
    /// Characters of a footer.
    pub const FOOTER: usize = 2048;
    /// Characters of all of an embed's text together.
    pub const EMBED_TOTAL: usize = 6000;
    /// Characters of a button's `custom_id`.
    pub const CUSTOM_ID: usize = 100;
}

/// A reply rendered for Discord: the message JSON and its attachments.
#[derive(Clone, Debug)]
pub struct DiscordMessage {
    /// The message body (content, embeds, components, flags).
    pub json: String,
    /// Attachments (the picture, whole texts that were cut).
    pub files: Vec<File>,
}

#[derive(Template)]
#[template(path = "discord/message.json", escape = "none")]
struct DiscordTemplate<'a> {
    content: &'a str,
    ephemeral: bool,
    title: &'a str,
    color: u32,
    description: &'a str,
    fields: &'a [(String, String)],
    image: Option<String>,
    footer: &'a str,
    buttons: &'a [Button],
}

/// Renders for Discord: the body in the embed description (code in fences, cut at a line end
/// to fit, the whole text attached), facts as fields, notes in the footer.
pub fn discord(reply: &Reply) -> DiscordMessage {
    use discord_limits as l;
    let mut files = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut description = String::new();
    // Facts are short; all of them together get at most 2,000 of the embed's 6,000.
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut facts_left = 2000usize;
    for (k, v) in reply.fields.iter().take(l::FIELDS) {
        let k = cut_chars(&discord_escape(k), l::FIELD_NAME.min(facts_left / 2));
        let v = cut_chars(
            &discord_escape(v),
            l::FIELD_VALUE.min(facts_left.saturating_sub(k.chars().count())),
        );
        let used = k.chars().count() + v.chars().count();
        if k.is_empty() || v.is_empty() || used > facts_left {
            notes.push("(more facts were left out to fit Discord's limits)".into());
            break;
        }
        facts_left -= used;
        fields.push((k, v));
    }
    let title = cut_chars(&discord_escape(&reply.title), l::TITLE);
    // The embed's 6,000 characters in all: what the title and fields leave, within 4,096.
    let others: usize = title.chars().count()
        + fields
            .iter()
            .map(|(k, v)| k.chars().count() + v.chars().count())
            .sum::<usize>();
    let budget = l::DESCRIPTION.min(l::EMBED_TOTAL.saturating_sub(others));
    // Leave room for the notes about cuts.
    let room = budget.saturating_sub(200);
    for p in &reply.parts {
        let left_room = room.saturating_sub(description.chars().count());
        match p {
            Part::Text(t) => {
                let escaped = discord_escape(t);
                if escaped.chars().count() + 2 > left_room {
                    notes.push(TEXT_CUT.into());
                    files.push(File {
                        name: "message.txt".into(),
                        bytes: t.clone().into_bytes(),
                    });
                }
                let t = cut_chars(&escaped, left_room.saturating_sub(2));
                description.push_str(&t);
                description.push_str("\n\n");
            }
            Part::Code { text, file } => {
                let body = discord_code(text);
                let (kept, left) = cut_lines(&body, left_room.saturating_sub(12));
                description.push_str("```\n");
                description.push_str(&kept);
                if !kept.ends_with('\n') {
                    description.push('\n');
                }
                description.push_str("```\n");
                if left > 0 {
                    notes.push(format!("{left} more lines {TRUNCATED} {file})"));
                    files.push(File {
                        name: file.clone(),
                        bytes: text.clone().into_bytes(),
                    });
                }
            }
        }
    }
    // Our notes about cuts as they are; the reply's own notes may quote users: escaped.
    let escaped: Vec<String> = reply.notes.iter().map(|n| discord_escape(n)).collect();
    for n in notes.iter().chain(&escaped) {
        if description.chars().count() + n.chars().count() + 2 > budget {
            break;
        }
        description.push_str(n);
        description.push('\n');
    }
    let image = reply
        .image
        .as_ref()
        .map(|f| format!("attachment://{}", f.name));
    if let Some(img) = &reply.image {
        files.insert(0, img.clone());
    }
    let color = match reply.tone {
        Tone::Info => 0x3b82f6,
        Tone::Good => 0x22c55e,
        Tone::Warn => 0xf59e0b,
        Tone::Bad => 0xef4444,
    };
    let json = DiscordTemplate {
        content: "",
        ephemeral: reply.ephemeral,
        title: &title,
        color,
        description: description.trim_end(),
        fields: &fields,
        image,
        footer: "",
        buttons: &reply.buttons,
    }
    .render()
    .unwrap_or_else(|e| {
        format!(
            "{{\"content\": {}}}",
            serde_json::Value::from(e.to_string())
        )
    });
    DiscordMessage { json, files }
}

/// The Discord modal asking for a manifest (an interaction response of type 9).
#[derive(Template)]
#[template(path = "discord/modal.json", escape = "none")]
pub struct DiscordModal<'a> {
    /// `apply:authz` or `apply:route`.
    pub custom_id: &'a str,
    /// The modal's title (at most 45 characters).
    pub title: &'a str,
    /// The input's label (at most 45 characters).
    pub label: &'a str,
    /// Longest manifest accepted (Discord allows 4,000 in one input).
    pub max_len: usize,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
    use super::*;

    fn card(diff_lines: usize) -> Reply {
        let diff: String = (0..diff_lines)
            .map(|i| format!("+  - name: client-{i:03}-with-a-fairly-long-service-account\n"))
            .collect();
        Reply::new("Change requested: AuthorizationPolicy booksapp/books")
            .field("Requester", "alice (<@U1>)")
            .text("What the dry-run changes:")
            .code(diff, "diff.txt")
            .note("Approve to apply.")
    }

    #[test]
    fn a_long_diff_is_cut_to_fit_slack_and_attached_whole() {
        let m = slack(&card(200));
        let v: serde_json::Value = serde_json::from_str(&m.json).unwrap();
        let blocks = v["blocks"].as_array().unwrap();
        assert!(blocks.len() <= slack_limits::BLOCKS);
        for b in blocks {
            if let Some(t) = b["text"]["text"].as_str() {
                assert!(
                    t.chars().count() <= slack_limits::SECTION_TEXT,
                    "{}",
                    t.len()
                );
            }
        }
        assert!(m.json.contains("more lines (cut to fit"), "{}", m.json);
        assert_eq!(m.files.len(), 1);
        assert_eq!(
            m.files[0].bytes.iter().filter(|b| **b == b'\n').count(),
            200
        );
        // And it parses as Block Kit.
        let c: slack_morphism::SlackMessageContent = serde_json::from_str(&m.json).unwrap();
        assert!(c.blocks.unwrap().len() >= 3);
    }

    #[test]
    fn a_long_diff_is_cut_to_fit_discord_and_attached_whole() {
        let m = discord(&card(200));
        let v: serde_json::Value = serde_json::from_str(&m.json).unwrap();
        let d = v["embeds"][0]["description"].as_str().unwrap();
        assert!(
            d.chars().count() <= discord_limits::DESCRIPTION,
            "{}",
            d.len()
        );
        assert!(d.contains("more lines (cut to fit"));
        assert_eq!(m.files.len(), 1);
        assert_eq!(v["allowed_mentions"]["parse"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn a_discord_embed_stays_within_6000_characters_in_all() {
        let mut r = card(200);
        for i in 0..20 {
            r = r.field(format!("field {i}"), "v".repeat(1000));
        }
        r = r.text("w ".repeat(3000));
        let m = discord(&r);
        let v: serde_json::Value = serde_json::from_str(&m.json).unwrap();
        chatsim::check_discord_message(&v).unwrap();
        assert!(
            m.files.iter().any(|f| f.name == "message.txt"),
            "the cut prose is attached"
        );
        let s = slack(&r);
        assert!(s.files.iter().any(|f| f.name == "message.txt"));
        chatsim::check_slack_blocks(&serde_json::from_str(&s.json).unwrap()).unwrap();
    }

    #[test]
    fn a_short_reply_is_not_cut() {
        let m = slack(&card(3));
        assert!(m.files.is_empty());
        assert!(!m.json.contains("cut to fit"));
        let m = discord(&card(3));
        assert!(m.files.is_empty());
    }

    #[test]
    fn user_text_cannot_ping_link_or_format() {
        let evil = "<!channel> <https://evil.example|click> *bold* @everyone ```x```";
        let s = slack_escape(evil);
        assert!(!s.contains('<') && !s.contains('>'), "{s}");
        assert!(!s.contains("*bold*"), "{s}");
        let d = discord_escape(evil);
        assert!(!d.contains("@everyone"), "{d}");
        assert!(!d.contains("*bold*") && d.contains("\\*bold\\*"), "{d}");
        for fence in ["```", "`````", "``````"] {
            let evil = format!("{fence}\n<!here> [click](https://evil.example)\n{fence}");
            let m = slack(&Reply::new("t").code(evil.clone(), "x.txt"));
            assert!(!m.json.contains("<!here>"), "{}", m.json);
            let v: serde_json::Value = serde_json::from_str(&m.json).unwrap();
            let block = v["blocks"][1]["text"]["text"].as_str().unwrap();
            assert_eq!(block.matches("```").count(), 2, "only our fences: {block}");
            let d: serde_json::Value =
                serde_json::from_str(&discord(&Reply::new("t").code(evil, "x.txt")).json).unwrap();
            let desc = d["embeds"][0]["description"].as_str().unwrap();
            assert_eq!(desc.matches("```").count(), 2, "only our fences: {desc}");
        }
        let d: serde_json::Value =
            serde_json::from_str(&discord(&Reply::new("**_t_** [x](y)")).json).unwrap();
        assert_eq!(
            d["embeds"][0]["title"],
            "\\*\\*\\_t\\_\\*\\* \\[x\\]\\(y\\)"
        );
    }

    #[test]
    fn buttons_render_on_both_platforms() {
        let mut r = Reply::new("t");
        r.buttons.push(Button {
            label: "Approve".into(),
            action: "approve".into(),
            value: "a1".into(),
            style: ButtonStyle::Good,
        });
        let s: serde_json::Value = serde_json::from_str(&slack(&r).json).unwrap();
        let b = &s["blocks"].as_array().unwrap().last().unwrap()["elements"][0];
        assert_eq!(b["action_id"], "approve");
        assert_eq!(b["style"], "primary");
        let d: serde_json::Value = serde_json::from_str(&discord(&r).json).unwrap();
        assert_eq!(
            d["components"][0]["components"][0]["custom_id"],
            "approve:a1"
        );
        assert_eq!(d["components"][0]["components"][0]["style"], 3);
    }
}
