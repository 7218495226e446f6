//! Editing GLib key files (Flatpak's override files, `$FLATPAK_USER_DIR/overrides/APP-ID`)
//! line by line: comments, order and untouched lines stay as they were.
//!
//! Values follow GKeyFile's escapes (`\s` `\n` `\t` `\r` `\\`); lists are
//! `;`-separated with `\;` inside an item and a trailing `;` (as Flatpak writes
//! them).

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// Blank line or comment, kept verbatim.
    Other(String),
    Group(String),
    Entry {
        key: String,
        raw: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFile {
    lines: Vec<Line>,
    /// The text lacked a final newline (kept that way on output).
    no_final_newline: bool,
}

impl KeyFile {
    pub fn parse(text: &str) -> KeyFile {
        let mut lines = Vec::new();
        for l in text.lines() {
            let t = l.trim_start();
            if t.is_empty() || t.starts_with('#') {
                lines.push(Line::Other(l.to_string()));
            } else if t.starts_with('[') && t.trim_end().ends_with(']') {
                let t = t.trim_end();
                lines.push(Line::Group(t[1..t.len() - 1].to_string()));
            } else if let Some((k, v)) = l.split_once('=') {
                lines.push(Line::Entry { key: k.trim().to_string(), raw: v.trim_start().to_string() });
            } else {
                lines.push(Line::Other(l.to_string()));
            }
        }
        KeyFile { lines, no_final_newline: !text.is_empty() && !text.ends_with('\n') }
    }

    /// Index range of the lines of `group` (after its header), if present.
    fn group_range(&self, group: &str) -> Option<(usize, usize)> {
        let start = self.lines.iter().position(|l| matches!(l, Line::Group(g) if g == group))? + 1;
        let end = self.lines[start..]
            .iter()
            .position(|l| matches!(l, Line::Group(_)))
            .map(|n| start + n)
            .unwrap_or(self.lines.len());
        Some((start, end))
    }

    fn find(&self, group: &str, key: &str) -> Option<usize> {
        let (s, e) = self.group_range(group)?;
        (s..e).find(|&i| matches!(&self.lines[i], Line::Entry { key: k, .. } if k == key))
    }

    /// The raw (still escaped) value.
    pub fn raw(&self, group: &str, key: &str) -> Option<&str> {
        match &self.lines[self.find(group, key)?] {
            Line::Entry { raw, .. } => Some(raw),
            _ => None,
        }
    }

    pub fn get(&self, group: &str, key: &str) -> Option<String> {
        self.raw(group, key).map(unescape)
    }

    #[cfg(test)]
    pub fn keys(&self, group: &str) -> Vec<String> {
        let Some((s, e)) = self.group_range(group) else { return Vec::new() };
        self.lines[s..e]
            .iter()
            .filter_map(|l| match l {
                Line::Entry { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    fn set_raw(&mut self, group: &str, key: &str, raw: String) {
        if let Some(i) = self.find(group, key) {
            self.lines[i] = Line::Entry { key: key.to_string(), raw };
            return;
        }
        match self.group_range(group) {
            Some((s, e)) => {
                // after the group's last entry (blank lines before the next group stay there)
                let at =
                    (s..e).rev().find(|&i| matches!(self.lines[i], Line::Entry { .. })).map(|i| i + 1).unwrap_or(s);
                self.lines.insert(at, Line::Entry { key: key.to_string(), raw });
            }
            None => {
                if matches!(self.lines.last(), Some(l) if !matches!(l, Line::Other(t) if t.trim().is_empty())) {
                    self.lines.push(Line::Other(String::new()));
                }
                self.lines.push(Line::Group(group.to_string()));
                self.lines.push(Line::Entry { key: key.to_string(), raw });
            }
        }
    }

    pub fn set(&mut self, group: &str, key: &str, value: &str) {
        self.set_raw(group, key, escape(value));
    }

    /// Removes a key; a group left without entries goes too (with the blank
    /// lines that separated it). Returns whether the key was there.
    pub fn remove(&mut self, group: &str, key: &str) -> bool {
        let Some(i) = self.find(group, key) else { return false };
        self.lines.remove(i);
        self.drop_group_if_empty(group);
        true
    }

    fn drop_group_if_empty(&mut self, group: &str) {
        let Some((s, e)) = self.group_range(group) else { return };
        if self.lines[s..e].iter().any(|l| matches!(l, Line::Entry { .. })) {
            return;
        }
        if self.lines[s..e].iter().any(|l| matches!(l, Line::Other(t) if !t.trim().is_empty())) {
            return; // comments inside: keep the group
        }
        let mut from = s - 1;
        // also the blank lines just before the header
        while from > 0 && matches!(&self.lines[from - 1], Line::Other(t) if t.trim().is_empty()) {
            from -= 1;
        }
        self.lines.drain(from..e);
        // a group that started the file: drop its trailing blank lines instead
        if from == 0 {
            while matches!(self.lines.first(), Some(Line::Other(t)) if t.trim().is_empty()) {
                self.lines.remove(0);
            }
        }
    }

    /// The items of a list value (empty when absent).
    pub fn list(&self, group: &str, key: &str) -> Vec<String> {
        self.raw(group, key).map(split_list).unwrap_or_default()
    }

    pub fn set_list(&mut self, group: &str, key: &str, items: &[String]) {
        if items.is_empty() {
            self.remove(group, key);
            return;
        }
        let mut raw = String::new();
        for it in items {
            raw.push_str(&escape(it).replace(';', "\\;"));
            raw.push(';');
        }
        self.set_raw(group, key, raw);
    }

    /// Adds `item` to a list unless present. Returns whether it was added.
    #[cfg(test)]
    pub fn list_add(&mut self, group: &str, key: &str, item: &str) -> bool {
        let mut v = self.list(group, key);
        if v.iter().any(|x| x == item) {
            return false;
        }
        v.push(item.to_string());
        self.set_list(group, key, &v);
        true
    }

    /// Removes `item` from a list. Returns whether it was there.
    pub fn list_remove(&mut self, group: &str, key: &str, item: &str) -> bool {
        let v = self.list(group, key);
        if !v.iter().any(|x| x == item) {
            return false;
        }
        let rest: Vec<String> = v.into_iter().filter(|x| x != item).collect();
        self.set_list(group, key, &rest);
        true
    }

    /// Replaces `old` by `new` in a list, in place. Returns whether `old` was there.
    pub fn list_replace(&mut self, group: &str, key: &str, old: &str, new: &str) -> bool {
        let mut v = self.list(group, key);
        let Some(i) = v.iter().position(|x| x == old) else { return false };
        v[i] = new.to_string();
        v.dedup();
        self.set_list(group, key, &v);
        true
    }

    /// Whether the file has no entries at all.
    pub fn is_empty(&self) -> bool {
        !self.lines.iter().any(|l| matches!(l, Line::Entry { .. }))
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            match l {
                Line::Other(t) => s.push_str(t),
                Line::Group(g) => {
                    s.push('[');
                    s.push_str(g);
                    s.push(']');
                }
                Line::Entry { key, raw } => {
                    s.push_str(key);
                    s.push('=');
                    s.push_str(raw);
                }
            }
            s.push('\n');
        }
        if self.no_final_newline {
            s.pop();
        }
        s
    }
}

/// GKeyFile's value escaping.
pub fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        match c {
            ' ' if i == 0 => s.push_str("\\s"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            '\\' => s.push_str("\\\\"),
            c => s.push(c),
        }
    }
    s
}

pub fn unescape(raw: &str) -> String {
    let mut s = String::with_capacity(raw.len());
    let mut it = raw.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            s.push(c);
            continue;
        }
        match it.next() {
            Some('s') => s.push(' '),
            Some('n') => s.push('\n'),
            Some('t') => s.push('\t'),
            Some('r') => s.push('\r'),
            Some('\\') => s.push('\\'),
            Some(o) => {
                s.push('\\');
                s.push(o);
            }
            None => s.push('\\'),
        }
    }
    s
}

fn split_list(raw: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut it = raw.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next() {
                Some(';') => cur.push(';'),
                Some(o) => {
                    cur.push('\\');
                    cur.push(o);
                }
                None => cur.push('\\'),
            },
            ';' => items.push(unescape(&std::mem::take(&mut cur))),
            c => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        items.push(unescape(&cur));
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLATPAK: &str = "[Context]\nsockets=x11;pcsc;\nfilesystems=home;\n\n[Environment]\nFOO=bar\n";

    #[test]
    fn round_trip_is_exact() {
        let text = "# a comment\n[Context]\nsockets=x11;\n\n[Session Bus Policy]\norg.x=talk\n";
        assert_eq!(KeyFile::parse(text).render(), text);
    }

    #[test]
    fn missing_final_newline_is_kept() {
        let text = "[Environment]\nFOO=\n\n[Context]\nunset-environment=FOO;";
        let mut k = KeyFile::parse(text);
        assert_eq!(k.render(), text);
        k.set("Environment", "A", "1");
        k.remove("Environment", "A");
        assert_eq!(k.render(), text);
    }

    #[test]
    fn get_set_remove() {
        let mut k = KeyFile::parse(FLATPAK);
        assert_eq!(k.get("Environment", "FOO").as_deref(), Some("bar"));
        assert_eq!(k.list("Context", "sockets"), vec!["x11", "pcsc"]);
        k.set("Environment", "LD_PRELOAD", "/home/u/.var/app/a.b.C/pcsc-bridge/libpcscbridge.so");
        assert_eq!(
            k.render(),
            "[Context]\nsockets=x11;pcsc;\nfilesystems=home;\n\n[Environment]\nFOO=bar\nLD_PRELOAD=/home/u/.var/app/a.b.C/pcsc-bridge/libpcscbridge.so\n"
        );
        assert!(k.remove("Environment", "LD_PRELOAD"));
        assert_eq!(k.render(), FLATPAK);
        assert!(!k.remove("Environment", "LD_PRELOAD"));
        assert_eq!(k.keys("Environment"), vec!["FOO"]);
    }

    #[test]
    fn new_group_and_empty_groups_vanish() {
        let mut k = KeyFile::parse("[Context]\nsockets=x11;\n");
        k.set("Environment", "A", "1");
        assert_eq!(k.render(), "[Context]\nsockets=x11;\n\n[Environment]\nA=1\n");
        k.remove("Environment", "A");
        assert_eq!(k.render(), "[Context]\nsockets=x11;\n");
        k.list_remove("Context", "sockets", "x11");
        assert!(k.is_empty());
        assert_eq!(k.render(), "");

        let mut k = KeyFile::parse("");
        k.set("Environment", "A", "1");
        assert_eq!(k.render(), "[Environment]\nA=1\n");
        // first group removed: no leading blank line left before the next
        let mut k = KeyFile::parse("[Environment]\nA=1\n\n[Context]\nsockets=pcsc;\n");
        k.remove("Environment", "A");
        assert_eq!(k.render(), "[Context]\nsockets=pcsc;\n");
    }

    #[test]
    fn lists() {
        let mut k = KeyFile::parse(FLATPAK);
        assert!(!k.list_add("Context", "sockets", "pcsc"));
        assert!(k.list_add("Context", "filesystems", "xdg-run/pcsc-bridge"));
        assert_eq!(k.raw("Context", "filesystems"), Some("home;xdg-run/pcsc-bridge;"));
        assert!(k.list_remove("Context", "filesystems", "xdg-run/pcsc-bridge"));
        assert_eq!(k.render(), FLATPAK);
        assert!(k.list_replace("Context", "sockets", "x11", "!pcsc"));
        assert_eq!(k.raw("Context", "sockets"), Some("!pcsc;pcsc;"));
        assert!(!k.list_replace("Context", "sockets", "wayland", "x"));
        assert!(k.list_add("Context", "devices", "all"));
        assert_eq!(k.raw("Context", "devices"), Some("all;"));
        // an item with ; and a list without the trailing separator
        let k2 = KeyFile::parse("[G]\nl=a\\;b;c\n");
        assert_eq!(k2.list("G", "l"), vec!["a;b", "c"]);
        let mut k3 = KeyFile::default();
        k3.set_list("G", "l", &["a;b".to_string()]);
        assert_eq!(k3.raw("G", "l"), Some("a\\;b;"));
    }

    #[test]
    fn escapes() {
        assert_eq!(escape(" a\\b\n"), "\\sa\\\\b\\n");
        assert_eq!(unescape("\\sa\\\\b\\n"), " a\\b\n");
        let mut k = KeyFile::default();
        k.set("Environment", "X", " lead");
        assert_eq!(k.get("Environment", "X").as_deref(), Some(" lead"));
    }

    #[test]
    fn comments_keep_group() {
        let mut k = KeyFile::parse("[Environment]\n# mine\nA=1\n");
        k.remove("Environment", "A");
        assert_eq!(k.render(), "[Environment]\n# mine\n");
    }
}
