//! How an MCP server's tools are named in sluice: `SERVER__tool`, both parts reduced to
//! the characters an OpenAI function name allows (`[A-Za-z0-9_-]`, others become `_`)
//! and the whole cut to 64 characters. Pure functions; `supervise` applies them to each
//! listing and drops (with a warning) a second tool that lands on a name already taken.

/// The longest function name the OpenAI API accepts.
pub const MAX_NAME: usize = 64;

/// `s` with every character outside `[A-Za-z0-9_-]` replaced by `_`.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The prefix of every tool of server `server` (`time__`), or why the server's name
/// leaves no room for tool names.
pub fn prefix(server: &str) -> Result<String, String> {
    let prefix = format!("{}__", sanitize(server));
    if prefix.len() >= MAX_NAME {
        return Err(format!(
            "the name is too long for MCP tool names `{server}__tool` (at most {} characters)",
            MAX_NAME - 3
        ));
    }
    Ok(prefix)
}

/// The sluice name of MCP tool `tool` under `prefix` (from [`prefix`]); `None` for an
/// empty tool name.
pub fn tool_name(prefix: &str, tool: &str) -> Option<String> {
    if tool.is_empty() {
        return None;
    }
    let mut name = format!("{prefix}{}", sanitize(tool));
    // Sanitized names are ASCII: cutting at a byte index is cutting at a character.
    name.truncate(MAX_NAME);
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_joined_with_two_underscores() {
        let p = prefix("time").unwrap();
        assert_eq!(
            tool_name(&p, "get_current_time").as_deref(),
            Some("time__get_current_time")
        );
    }

    #[test]
    fn other_characters_become_underscores() {
        let p = prefix("my.server").unwrap();
        assert_eq!(
            tool_name(&p, "files/read ünïcode").as_deref(),
            Some("my_server__files_read__n_code")
        );
    }

    #[test]
    fn long_names_are_cut_to_64() {
        let p = prefix("srv").unwrap();
        let name = tool_name(&p, &"x".repeat(100)).unwrap();
        assert_eq!(name.len(), MAX_NAME);
        assert!(name.starts_with("srv__xxx"));
    }

    #[test]
    fn a_server_name_without_room_is_refused() {
        assert!(prefix(&"s".repeat(61)).is_ok());
        assert!(prefix(&"s".repeat(62)).is_err());
        assert_eq!(tool_name("a__", ""), None);
    }
}
