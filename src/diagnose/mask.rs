//! What a diagnostics archive must not carry: passwords in URLs (a proxy's
//! `http://user:password@host`, in the proxy keys, daemon.json's `proxies`, dockerd's log) and
//! the values of credential fields in JSON (a registry's `auth`, `password`, tokens). The
//! archive goes into bug reports; a secret in it would leave the machine.

use serde_json::Value;

/// What a masked secret reads as.
pub const MASK: &str = "****";

/// `text` with the password of every `scheme://user:password@host` replaced by [`MASK`].
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at a path, a space, a quote or the end of the line.
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '>'))
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@').and_then(|at| authority[..at].find(':').map(|colon| (colon, at)))
        {
            Some((colon, at)) => {
                out.push_str(&authority[..=colon]);
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Whether a JSON field of this name holds a credential.
fn secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"].iter().any(|s| name.contains(s))
        || matches!(name.as_str(), "auth" | "auths" | "credentials" | "identitytoken")
}

/// `value` with credential fields masked and every string through [`text`].
pub fn json(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(text(s)),
        Value::Array(items) => Value::Array(items.iter().map(json).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let v =
                        if secret_field(k) && !v.is_null() { Value::from(MASK) } else { json(v) };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked_and_the_rest_kept() {
        assert_eq!(
            text("proxy http://bob:hunter2@proxy.example:3128/x and https://plain.example/"),
            "proxy http://bob:****@proxy.example:3128/x and https://plain.example/"
        );
        assert_eq!(text("\"socks5://a:b:c@h\""), "\"socks5://a:****@h\"");
        assert_eq!(text("user@host.example and ://"), "user@host.example and ://");
        assert_eq!(text("http://only-user@h/"), "http://only-user@h/");
        assert_eq!(text("ünïcode http://u:p@h ünïcode"), "ünïcode http://u:****@h ünïcode");
    }

    #[test]
    fn credential_fields_are_masked_wherever_they_are() {
        let value = serde_json::json!({
            "proxies": {"http-proxy": "http://bob:hunter2@proxy:3128"},
            "auths": {"registry.example": {"auth": "Ym9iOmh1bnRlcjI="}},
            "RegistryConfig": {"IndexConfigs": {}},
            "list": [{"password": "x"}, {"name": "kept"}],
            "token": null,
        });
        let masked = json(&value).to_string();
        assert!(!masked.contains("hunter2") && !masked.contains("Ym9i"), "{masked}");
        assert!(masked.contains("kept") && masked.contains("IndexConfigs"), "{masked}");
        assert!(masked.contains("\"token\":null"), "{masked}");
    }
}
