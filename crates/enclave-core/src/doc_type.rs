//! The kinds of document (API.md §4): what the chunker looks for in each.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;

/// The kinds of document API.md §4 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DocumentType {
    Text,
    Markdown,
    Html,
    Pdf,
    Code,
    Email,
    Chat,
    Report,
    Json,
    Other,
}

impl DocumentType {
    pub const ALL: [DocumentType; 10] = [
        Self::Text,
        Self::Markdown,
        Self::Html,
        Self::Pdf,
        Self::Code,
        Self::Email,
        Self::Chat,
        Self::Report,
        Self::Json,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Markdown => "markdown",
            Self::Html => "html",
            Self::Pdf => "pdf",
            Self::Code => "code",
            Self::Email => "email",
            Self::Chat => "chat",
            Self::Report => "report",
            Self::Json => "json",
            Self::Other => "other",
        }
    }

    /// Whether the content is structured with markdown-style headings, which the
    /// `auto` chunking strategy then follows.
    pub fn is_markdown_like(self) -> bool {
        matches!(self, Self::Markdown | Self::Report)
    }
}

impl FromStr for DocumentType {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                InvalidInput::new(
                    "type",
                    format!(
                        "unknown document type {s:?}; expected one of {}",
                        Self::ALL.map(|t| t.as_str()).join(", ")
                    ),
                )
            })
    }
}

impl fmt::Display for DocumentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
