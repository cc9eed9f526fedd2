//! An MCP `tools/call` result as the text the model reads: text parts joined by new
//! lines, binary parts (images, audio, blobs) summarised as `[image/png, 1234 bytes]`,
//! embedded text resources inlined, links named. `isError: true` becomes
//! [`ToolError::Failed`] with the same text. A result with no content but a structured
//! one is that JSON.

use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};

use crate::tools::ToolError;

/// The model's view of `result`.
pub fn render(result: &CallToolResult) -> Result<String, ToolError> {
    let mut parts: Vec<String> = result.content.iter().map(block).collect();
    if parts.is_empty() {
        if let Some(structured) = &result.structured_content {
            parts.push(structured.to_string());
        }
    }
    let text = parts.join("\n");
    if result.is_error == Some(true) {
        let text = if text.is_empty() {
            "the tool reported an error without a message".to_owned()
        } else {
            text
        };
        return Err(ToolError::Failed(text));
    }
    Ok(text)
}

fn block(content: &ContentBlock) -> String {
    match content {
        ContentBlock::Text(t) => t.text.clone(),
        ContentBlock::Image(i) => format!("[{}, {} bytes]", i.mime_type, base64_len(&i.data)),
        ContentBlock::Audio(a) => format!("[{}, {} bytes]", a.mime_type, base64_len(&a.data)),
        ContentBlock::Resource(r) => match &r.resource {
            ResourceContents::TextResourceContents { text, .. } => text.clone(),
            ResourceContents::BlobResourceContents {
                uri,
                mime_type,
                blob,
                ..
            } => format!(
                "[resource {uri}, {}, {} bytes]",
                mime_type.as_deref().unwrap_or("application/octet-stream"),
                base64_len(blob)
            ),
            _ => "[an embedded resource of a kind sluice does not show]".to_owned(),
        },
        ContentBlock::ResourceLink(link) => match &link.mime_type {
            Some(mime) => format!("[resource link {} ({}), {mime}]", link.uri, link.name),
            None => format!("[resource link {} ({})]", link.uri, link.name),
        },
        // `ContentBlock` is non-exhaustive: a kind added later is named, not dropped.
        #[allow(unreachable_patterns)]
        _ => "[content of a kind sluice does not show]".to_owned(),
    }
}

/// How many bytes the base64 text `data` decodes to (without decoding it).
fn base64_len(data: &str) -> usize {
    let chars = data.bytes().filter(|b| !b.is_ascii_whitespace()).count();
    let padding = data
        .trim_end()
        .bytes()
        .rev()
        .take_while(|&b| b == b'=')
        .count();
    (chars * 3 / 4).saturating_sub(padding)
}

#[cfg(test)]
mod tests {
    use rmcp::model::{EmbeddedResource, ImageContent};
    use serde_json::json;

    use super::*;

    fn result(content: Vec<ContentBlock>, is_error: Option<bool>) -> CallToolResult {
        serde_json::from_value(json!({
            "content": serde_json::to_value(content).unwrap(),
            "isError": is_error,
        }))
        .unwrap()
    }

    #[test]
    fn text_parts_are_joined_and_binaries_summarised() {
        let r = result(
            vec![
                ContentBlock::text("first"),
                ContentBlock::Image(ImageContent::new("aGVsbG8=", "image/png")),
                ContentBlock::Resource(EmbeddedResource::new(ResourceContents::text(
                    "inline",
                    "file:///a.txt",
                ))),
                ContentBlock::text("last"),
            ],
            None,
        );
        assert_eq!(
            render(&r).unwrap(),
            "first\n[image/png, 5 bytes]\ninline\nlast"
        );
    }

    #[test]
    fn is_error_is_a_failure_with_the_text() {
        let r = result(vec![ContentBlock::text("no such zone")], Some(true));
        assert_eq!(
            render(&r),
            Err(ToolError::Failed("no such zone".to_owned()))
        );
    }

    #[test]
    fn structured_content_stands_in_for_missing_text() {
        let r: CallToolResult =
            serde_json::from_value(json!({"content": [], "structuredContent": {"sum": 3}}))
                .unwrap();
        assert_eq!(render(&r).unwrap(), r#"{"sum":3}"#);
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(base64_len(""), 0);
        assert_eq!(base64_len("aGVsbG8="), 5);
        assert_eq!(base64_len("aGVsbG8h"), 6);
        assert_eq!(base64_len("aGVs\nbA=="), 4);
    }
}
