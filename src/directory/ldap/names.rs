//! DN and filter text: every value from outside is escaped (RFC 4514 for DN attribute values,
//! RFC 4515 for filter assertion values) with ldap3's `dn_escape` / `ldap_escape`; DNs read
//! back are split and unescaped here.

use std::time::Duration;

use ldap3::{dn_escape, ldap_escape};

use super::config::USERNAME_PLACEHOLDER;

/// OID of LDAP_MATCHING_RULE_IN_CHAIN (Active Directory): matches through nested groups.
pub const IN_CHAIN_RULE: &str = "1.2.840.113556.1.4.1941";

/// The user filter with the principal escaped into every `{username}`.
pub fn user_filter(template: &str, principal: &str) -> String {
    template.replace(USERNAME_PLACEHOLDER, &ldap_escape(principal))
}

/// `(attribute=value)` with the value escaped.
pub fn equality(attribute: &str, value: &str) -> String {
    format!("({attribute}={})", ldap_escape(value))
}

/// Groups of a class with a name: `(&(objectClass=class)(cn=name))`.
pub fn group_by_name(object_class: &str, name_attribute: &str, name: &str) -> String {
    format!(
        "(&(objectClass={object_class}){})",
        equality(name_attribute, name)
    )
}

/// The AD filter that holds for an entry that is a member of `group_dn` through any nesting.
pub fn in_chain(member_of_attribute: &str, group_dn: &str) -> String {
    format!(
        "({member_of_attribute}:{IN_CHAIN_RULE}:={})",
        ldap_escape(group_dn)
    )
}

/// The DN of a new entry `attribute=value,parent`, the value escaped.
pub fn child_dn(attribute: &str, value: &str, parent: &str) -> String {
    format!("{attribute}={},{parent}", dn_escape(value))
}

/// A member value with Active Directory's time-to-live: `<TTL=seconds,DN>`. AD removes the
/// value itself once the TTL passes; it needs the Privileged Access Management optional
/// feature (forest functional level 2016). Sub-second parts round up, and 0 becomes 1.
pub fn ttl_member(dn: &str, ttl: Duration) -> String {
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    format!("<TTL={},{dn}>", seconds.max(1))
}

/// Index of the first `,` that ends the first RDN (not escaped by `\`), if any.
fn first_rdn_end(dn: &str) -> Option<usize> {
    let bytes = dn.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b',' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// The first RDN of a DN as (attribute, unescaped value), when it is single-valued
/// (`uid=alice,ou=people,…` → (`uid`, `alice`)). None for multi-valued RDNs (`+`), hex-encoded
/// BER values (`#…`) and malformed text.
pub fn first_rdn(dn: &str) -> Option<(String, String)> {
    let rdn = match first_rdn_end(dn) {
        Some(end) => &dn[..end],
        None => dn,
    };
    let (attribute, raw) = rdn.split_once('=')?;
    let attribute = attribute.trim();
    if attribute.is_empty() || raw.starts_with('#') {
        return None;
    }
    let value = unescape_value(raw.trim_start())?;
    Some((attribute.to_owned(), value))
}

/// RFC 4514 value unescaping: `\` followed by a special character or by two hex digits.
/// None for an unescaped `+` (a multi-valued RDN) or an invalid escape.
fn unescape_value(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut trailing_space_escaped = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                let next = *bytes.get(i + 1)?;
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(next), bytes.get(i + 2).and_then(|b| hex(*b))) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(next);
                        i += 2;
                    }
                }
                trailing_space_escaped = i == bytes.len() && out.last() == Some(&b' ');
            }
            b'+' => return None,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if !trailing_space_escaped {
        while out.last() == Some(&b' ') {
            out.pop();
        }
    }
    String::from_utf8(out).ok()
}

/// A DN in a form for comparing: RDNs split, each attribute lowercased and each value
/// unescaped and lowercased (LDAP's usual case-insensitive matching of names).
pub fn normalize(dn: &str) -> String {
    let mut parts = Vec::new();
    let mut rest = dn;
    loop {
        let (rdn, tail) = match first_rdn_end(rest) {
            Some(end) => (&rest[..end], Some(&rest[end + 1..])),
            None => (rest, None),
        };
        let part = match rdn.split_once('=') {
            Some((a, v)) => match unescape_value(v.trim_start()) {
                Some(v) => format!("{}={}", a.trim().to_ascii_lowercase(), v.to_lowercase()),
                None => rdn.trim().to_lowercase(),
            },
            None => rdn.trim().to_lowercase(),
        };
        parts.push(part);
        match tail {
            Some(t) => rest = t,
            None => break,
        }
    }
    // Rejoin with a separator no unescaped value can contain.
    parts.join("\u{0}")
}

/// Whether `dn` lies strictly below `base`.
pub fn is_below(dn: &str, base: &str) -> bool {
    let dn = normalize(dn);
    let base = normalize(base);
    dn.len() > base.len() && dn.ends_with(&base) && dn[..dn.len() - base.len()].ends_with('\u{0}')
}

/// Whether two DNs name the same entry (up to case and escaping).
pub fn same_dn(a: &str, b: &str) -> bool {
    normalize(a) == normalize(b)
}

/// Looks like a DN (`attr=value`), for listing members that map to no principal by their DN.
pub fn looks_like_dn(text: &str) -> bool {
    text.split_once('=').is_some_and(|(a, _)| {
        !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        "*)(uid=*",
        "a,ou=admins,dc=example,dc=org",
        "x)(|(objectClass=*)",
        "nul\0byte",
        "back\\slash",
        "#leading hash",
        " leading and trailing ",
        "plus+sign=eq;semi<lt>gt\"q",
        "Ünïcødé ✓ grüppe",
    ];

    #[test]
    fn filter_values_cannot_inject() {
        assert_eq!(
            user_filter("(&(objectClass=person)(uid={username}))", "*)(uid=*"),
            "(&(objectClass=person)(uid=\\2a\\29\\28uid=\\2a))"
        );
        assert_eq!(equality("cn", "nul\0"), "(cn=nul\\00)");
        assert_eq!(equality("cn", "a\\b"), "(cn=a\\5cb)");
        for name in HOSTILE {
            let f = equality("cn", name);
            let inner = &f[4..f.len() - 1];
            assert!(
                !inner.contains(['(', ')', '*', '\0']),
                "{name:?} leaked into {f}"
            );
            assert!(ldap3::parse_filter(&f).is_ok(), "{f}");
        }
        // The template may use the placeholder more than once.
        assert_eq!(
            user_filter("(|(uid={username})(mail={username}))", "a*"),
            "(|(uid=a\\2a)(mail=a\\2a))"
        );
    }

    #[test]
    fn dn_values_cannot_inject_and_round_trip() {
        assert_eq!(
            child_dn("cn", "a,ou=admins", "ou=groups,dc=x"),
            "cn=a\\2cou\\3dadmins,ou=groups,dc=x"
        );
        for name in HOSTILE {
            let dn = child_dn("cn", name, "ou=groups,dc=example,dc=org");
            let (attribute, value) = first_rdn(&dn).unwrap();
            assert_eq!(attribute, "cn");
            assert_eq!(&value, name, "{dn}");
            assert!(is_below(&dn, "ou=groups,dc=example,dc=org"), "{dn}");
            assert!(!is_below(&dn, "ou=admins,dc=example,dc=org"), "{dn}");
        }
    }

    #[test]
    fn rdns_in_the_forms_servers_return() {
        assert_eq!(
            first_rdn("uid=alice,ou=people,dc=x"),
            Some(("uid".into(), "alice".into()))
        );
        assert_eq!(
            first_rdn("CN=Smith\\, John,OU=Users,DC=x"),
            Some(("CN".into(), "Smith, John".into()))
        );
        assert_eq!(first_rdn("cn=a+sn=b,dc=x"), None);
        assert_eq!(first_rdn("cn=#04024869,dc=x"), None);
        assert_eq!(first_rdn("nonsense"), None);
        assert_eq!(
            first_rdn("cn=\\20x\\20,dc=x"),
            Some(("cn".into(), " x ".into()))
        );
    }

    #[test]
    fn dns_compare_up_to_case_and_escaping() {
        assert!(same_dn(
            "uid=Alice,OU=People,dc=x",
            "uid=alice, ou=people,dc=x"
        ));
        assert!(same_dn("cn=a\\2cb,dc=x", "cn=a\\,b,dc=x"));
        assert!(!same_dn("cn=a\\,b,dc=x", "cn=a,b=,dc=x"));
        assert!(is_below("uid=a,ou=people,dc=x", "ou=People,dc=X"));
        assert!(!is_below("ou=people,dc=x", "ou=people,dc=x"));
        assert!(!is_below("uid=a,xou=people,dc=x", "ou=people,dc=x"));
    }

    #[test]
    fn in_chain_filter_escapes_the_group() {
        assert_eq!(
            in_chain("memberOf", "CN=Ops (EU),OU=Groups,DC=corp"),
            "(memberOf:1.2.840.113556.1.4.1941:=CN=Ops \\28EU\\29,OU=Groups,DC=corp)"
        );
        assert!(ldap3::parse_filter(in_chain("memberOf", "CN=a*,DC=b")).is_ok());
    }

    #[test]
    fn ttl_member_values() {
        assert_eq!(
            ttl_member("CN=Alice,OU=Users,DC=corp", Duration::from_secs(3600)),
            "<TTL=3600,CN=Alice,OU=Users,DC=corp>"
        );
        assert_eq!(
            ttl_member("CN=a,DC=b", Duration::from_millis(1500)),
            "<TTL=2,CN=a,DC=b>"
        );
        assert_eq!(ttl_member("CN=a,DC=b", Duration::ZERO), "<TTL=1,CN=a,DC=b>");
    }
}
