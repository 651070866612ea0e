//! Putting names into Graph URLs safely: OData string literals, path segments, user paths and
//! query values. Every name that reaches a URL goes through here.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What stays as is in a query value: RFC 3986 unreserved characters and the OData literal
/// quote. Everything else (space, `&`, `#`, `+`, `%`, `=`) is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'\'');

/// What stays as is in a path segment: unreserved characters and the sub-delimiters Graph
/// expects literally in keys (`@` of a UPN, `$`, the `('…')` of a key expression). `/`, `?`,
/// `#`, `%` and spaces are encoded.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@')
    .remove(b'$')
    .remove(b'!')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=');

/// An object id: 8-4-4-4-12 hexadecimal digits.
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// An OData string literal: in single quotes, with each single quote doubled.
pub fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A value for the query string, percent-encoded.
pub fn query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// One path segment, percent-encoded.
pub fn segment(value: &str) -> String {
    utf8_percent_encode(value, PATH_SEGMENT).to_string()
}

/// The path of a user by object id or user principal name. A UPN that starts with `$` must be
/// given as a key expression, `/users('$alice@contoso.com')` (Graph: "if the userPrincipalName
/// begins with a $ character, remove the slash after /users and enclose the userPrincipalName in
/// parentheses and single quotes"); quotes in it are doubled. Guest UPNs (`…#EXT#@…`) have their
/// `#` encoded either way.
pub fn user_path(id_or_upn: &str) -> String {
    if id_or_upn.starts_with('$') {
        format!("/users({})", segment(&odata_string(id_or_upn)))
    } else {
        format!("/users/{}", segment(id_or_upn))
    }
}

/// A `mailNickname` for a new security group: at most 64 ASCII characters, without the ones
/// Graph refuses (`@ ( ) \ [ ] " ; : < > ,` and spaces), never empty.
pub fn mail_nickname(display_name: &str) -> String {
    let mut nickname: String = display_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while nickname.contains("--") {
        nickname = nickname.replace("--", "-");
    }
    let nickname = nickname.trim_matches(['-', '.']);
    let nickname: String = nickname.chars().take(64).collect();
    let nickname = nickname.trim_end_matches(['-', '.']);
    if nickname.is_empty() {
        "pim-group".to_owned()
    } else {
        nickname.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odata_literals_double_their_quotes() {
        assert_eq!(odata_string("Fin Report"), "'Fin Report'");
        assert_eq!(odata_string("O'Brien's"), "'O''Brien''s'");
        assert_eq!(odata_string("' or 1 eq 1 or '"), "''' or 1 eq 1 or '''");
    }

    #[test]
    fn query_values_encode_what_would_split_the_query() {
        assert_eq!(
            query_value("displayName eq 'a&b=c#d+e%f'"),
            "displayName%20eq%20'a%26b%3Dc%23d%2Be%25f'"
        );
    }

    #[test]
    fn user_paths() {
        assert_eq!(user_path("alice@contoso.com"), "/users/alice@contoso.com");
        assert_eq!(
            user_path("$adele@contoso.com"),
            "/users('$adele@contoso.com')"
        );
        assert_eq!(
            user_path("$o'neil@contoso.com"),
            "/users('$o''neil@contoso.com')"
        );
        assert_eq!(
            user_path("bob_fabrikam.com#EXT#@contoso.onmicrosoft.com"),
            "/users/bob_fabrikam.com%23EXT%23@contoso.onmicrosoft.com"
        );
        assert_eq!(user_path("a/../b?c"), "/users/a%2F..%2Fb%3Fc");
        assert_eq!(
            user_path("6f1c1a2e-0000-4000-8000-000000000001"),
            "/users/6f1c1a2e-0000-4000-8000-000000000001"
        );
    }

    #[test]
    fn guids() {
        assert!(is_guid("6f1c1a2e-0000-4000-8000-00000000000a"));
        assert!(!is_guid("6f1c1a2e-0000-4000-8000-00000000000"));
        assert!(!is_guid("alice@contoso.com"));
        assert!(!is_guid("6f1c1a2e-0000-4000-8000-00000000000g"));
    }

    #[test]
    fn mail_nicknames_are_safe() {
        assert_eq!(
            mail_nickname("FinReport SeniorAnalyst"),
            "FinReport-SeniorAnalyst"
        );
        assert_eq!(mail_nickname("a@b (c) [d]; e:f"), "a-b-c-d-e-f");
        assert_eq!(mail_nickname("Ünïcode"), "n-code");
        assert_eq!(mail_nickname("@@@"), "pim-group");
        assert_eq!(mail_nickname(&"x".repeat(100)).len(), 64);
    }
}
