//! What LDAP servers answer to this backend's member writes, what the backend does then, and
//! how the servers compare principal names: the one rule table that the backend
//! (`LdapDirectory::modify`, `listed_as`), the tests (`tests/it/ldap.rs`, whose Active Directory
//! look-alike in `tests/support/ldap_proxy.rs` answers from here) and `docs/directories.md`
//! name. Each rule cites where the answer is documented.

use ldap3::LdapResult;

/// LDAP_SERVER_PERMISSIVE_MODIFY_OID (MS-ADTS 3.1.1.3.4.1.8): with it, adding a value already
/// present and deleting one absent both succeed. Active Directory lists it in the rootDSE's
/// `supportedControl` (MS-ADTS 3.1.1.3.4.1). OpenLDAP's slapd (2.5.13, as the tests run it)
/// honours it on a repeated add without listing it there. The backend sends it on every
/// modify with `activeDirectory: true`, or when the rootDSE lists it.
pub const PERMISSIVE_MODIFY_OID: &str = "1.2.840.113556.1.4.1413";

/// The member writes the backend makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    AddMember,
    RemoveMember,
}

/// What an answer means for the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The change is already in place: the write is done.
    AlreadyDone,
    /// The group would be left without the member value its object class requires: the write
    /// is made again with the placeholder member added in the same modify.
    NeedsPlaceholder,
}

/// One answer a server gives to a member write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub server: &'static str,
    pub write: Write,
    /// The LDAP result code (RFC 4511 §A.2).
    pub code: u32,
    /// How the diagnostic message starts; `""` matches any.
    pub diagnostic: &'static str,
    pub outcome: Outcome,
    /// Where the answer is documented.
    pub source: &'static str,
}

/// Active Directory, adding a member already present without the permissive-modify control:
/// `entryAlreadyExists` (68) with ERROR_MEMBER_IN_ALIAS (1378, 0x562, "The specified account
/// name is already a member of the group"; Microsoft Learn, "System Error Codes (1300-1699)").
/// AD's diagnostic starts with the Windows error code in eight hex digits; the rest is
/// informational (MS-ADTS 3.1.1.3.1.9, "Error Message Strings"), and follows here the shape of
/// AD's `UpdErr … problem 6005 (ENTRY_EXISTS)` answers.
pub const AD_ALREADY_A_MEMBER: Rule = Rule {
    server: "Active Directory",
    write: Write::AddMember,
    code: 68,
    diagnostic: "00000562: UpdErr: DSID-031A11C4, problem 6005 (ENTRY_EXISTS), data 0",
    outcome: Outcome::AlreadyDone,
    source: "MS-ADTS 3.1.1.3.4.1.8 (LDAP_SERVER_PERMISSIVE_MODIFY_OID), 3.1.1.3.1.9; Win32 ERROR_MEMBER_IN_ALIAS 0x562",
};

/// Active Directory, removing a member not present without the permissive-modify control:
/// `unwillingToPerform` (53) with ERROR_MEMBER_NOT_IN_ALIAS (1377, 0x561, "The specified
/// account name is not a member of the group"; same sources as [`AD_ALREADY_A_MEMBER`]).
pub const AD_NOT_A_MEMBER: Rule = Rule {
    server: "Active Directory",
    write: Write::RemoveMember,
    code: 53,
    diagnostic: "00000561: SvcErr: DSID-031A1021, problem 5003 (WILL_NOT_PERFORM), data 0",
    outcome: Outcome::AlreadyDone,
    source: "MS-ADTS 3.1.1.3.4.1.8 (LDAP_SERVER_PERMISSIVE_MODIFY_OID), 3.1.1.3.1.9; Win32 ERROR_MEMBER_NOT_IN_ALIAS 0x561",
};

/// How many of the first characters of an AD diagnostic carry the error code (MS-ADTS
/// 3.1.1.3.1.9); the rest differs between domain controllers and builds.
const AD_CODE_CHARS: usize = 8;

/// Every answer the backend acts on, besides plain success.
pub const RULES: &[Rule] = &[
    Rule {
        server: "OpenLDAP, FreeIPA (389-ds), any RFC 4511 server",
        write: Write::AddMember,
        code: 20,
        diagnostic: "",
        outcome: Outcome::AlreadyDone,
        source: "RFC 4511 §A.2 attributeOrValueExists; slapd: \"modify/add: member: value #0 already exists\"",
    },
    Rule {
        server: "OpenLDAP, FreeIPA (389-ds), any RFC 4511 server",
        write: Write::RemoveMember,
        code: 16,
        diagnostic: "",
        outcome: Outcome::AlreadyDone,
        source: "RFC 4511 §A.2 noSuchAttribute; slapd: \"modify/delete: member: no such value\"",
    },
    AD_ALREADY_A_MEMBER,
    AD_NOT_A_MEMBER,
    Rule {
        server: "any server, groupOfNames / groupOfUniqueNames",
        write: Write::RemoveMember,
        code: 65,
        diagnostic: "",
        outcome: Outcome::NeedsPlaceholder,
        source: "RFC 4519 §3.5, §3.6 (MUST member / uniqueMember); RFC 4511 §A.2 objectClassViolation; slapd: \"object class 'groupOfNames' requires attribute 'member'\"",
    },
];

/// What a server's answer to `write` means, when a rule covers it.
pub fn outcome(write: Write, result: &LdapResult) -> Option<Outcome> {
    RULES
        .iter()
        .find(|rule| {
            let prefix = rule
                .diagnostic
                .get(..AD_CODE_CHARS.min(rule.diagnostic.len()))
                .unwrap_or_default();
            rule.write == write
                && rule.code == result.rc
                && result
                    .text
                    .get(..prefix.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        })
        .map(|rule| rule.outcome)
}

/// Principal attributes whose equality matching ignores letter case, and where that is written.
/// A principal written in other case than the directory's value names the same entry, so it
/// must not be removed and re-added over spelling.
pub const CASE_IGNORING_ATTRIBUTES: &[(&str, &str)] = &[
    ("uid", "RFC 4519 §2.39: EQUALITY caseIgnoreMatch"),
    ("cn", "RFC 4519 §2.3 (name): EQUALITY caseIgnoreMatch"),
    ("mail", "RFC 4524 §2.16: EQUALITY caseIgnoreIA5Match"),
    (
        "sAMAccountName",
        "Active Directory schema: String(Unicode), \"a case-insensitive Unicode string\"",
    ),
    (
        "userPrincipalName",
        "Active Directory schema: String(Unicode), \"a case-insensitive Unicode string\"",
    ),
];

/// Whether values of `attribute` compare without regard to case. With `active_directory`, every
/// name attribute does (AD's string syntaxes for names, String(Unicode) and CaseIgnoreString,
/// are case-insensitive); elsewhere only those in [`CASE_IGNORING_ATTRIBUTES`], and any other
/// compares exactly.
pub fn ignores_case(attribute: &str, active_directory: bool) -> bool {
    active_directory
        || CASE_IGNORING_ATTRIBUTES
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(attribute))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: u32, text: &str) -> LdapResult {
        LdapResult {
            rc: code,
            matched: String::new(),
            text: text.into(),
            refs: vec![],
            ctrls: vec![],
        }
    }

    /// AD's answers as documented (see the rules' sources), and as a different DC build words
    /// the informational part: only the first eight characters decide.
    #[test]
    fn active_directory_already_a_member_and_not_a_member_are_done() {
        assert_eq!(
            outcome(
                Write::AddMember,
                &answer(68, AD_ALREADY_A_MEMBER.diagnostic)
            ),
            Some(Outcome::AlreadyDone)
        );
        assert_eq!(
            outcome(Write::RemoveMember, &answer(53, AD_NOT_A_MEMBER.diagnostic)),
            Some(Outcome::AlreadyDone)
        );
        assert_eq!(
            outcome(
                Write::AddMember,
                &answer(
                    68,
                    "00000562: UpdErr: DSID-031A122A, problem 6005 (ENTRY_EXISTS), data 0\n"
                )
            ),
            Some(Outcome::AlreadyDone)
        );
    }

    /// The same codes with other AD error codes are not "done": 68 with 0x2071 (an entry of
    /// that name exists, as AD answers an add of an existing entry) and 53 with any code but
    /// 0x561 stay errors.
    #[test]
    fn other_answers_with_the_same_codes_stay_errors() {
        assert_eq!(
            outcome(
                Write::AddMember,
                &answer(
                    68,
                    "00002071: UpdErr: DSID-030503C4, problem 6005 (ENTRY_EXISTS), data 0"
                )
            ),
            None
        );
        assert_eq!(
            outcome(
                Write::RemoveMember,
                &answer(
                    53,
                    "000020EF: SvcErr: DSID-031A1256, problem 5003 (WILL_NOT_PERFORM), data 0"
                )
            ),
            None
        );
        assert_eq!(outcome(Write::RemoveMember, &answer(53, "")), None);
        // A code for one write does not excuse the other.
        assert_eq!(
            outcome(
                Write::RemoveMember,
                &answer(68, AD_ALREADY_A_MEMBER.diagnostic)
            ),
            None
        );
        assert_eq!(outcome(Write::AddMember, &answer(16, "")), None);
    }

    #[test]
    fn rfc_answers() {
        assert_eq!(
            outcome(
                Write::AddMember,
                &answer(20, "modify/add: member: value #0 already exists")
            ),
            Some(Outcome::AlreadyDone)
        );
        assert_eq!(
            outcome(
                Write::RemoveMember,
                &answer(16, "modify/delete: member: no such value")
            ),
            Some(Outcome::AlreadyDone)
        );
        assert_eq!(
            outcome(
                Write::RemoveMember,
                &answer(
                    65,
                    "object class 'groupOfNames' requires attribute 'member'"
                )
            ),
            Some(Outcome::NeedsPlaceholder)
        );
        assert_eq!(outcome(Write::AddMember, &answer(65, "")), None);
    }

    #[test]
    fn names_compare_as_their_matching_rule_does() {
        assert!(ignores_case("uid", false));
        assert!(ignores_case("UID", false));
        assert!(ignores_case("mail", false));
        assert!(ignores_case("sAMAccountName", false));
        assert!(!ignores_case("employeeNumber", false));
        assert!(ignores_case("employeeNumber", true));
    }
}
