//! Azure ABAC role assignment conditions (`conditionVersion` 2.0): parsing and evaluation.
//!
//! The grammar is Microsoft's "Azure role assignment condition format and syntax"
//! (MicrosoftDocs/azure-docs, `articles/role-based-access-control/conditions-format.md`):
//! expressions joined by `AND`/`&&`, `OR`/`||`, negated by `!`/`NOT`, grouped by parentheses;
//! `ActionMatches{'<action pattern>'}` and `SubOperationMatches{'<suboperation>'}`; and
//! comparisons `@<Source>[<attribute>] <operator> <value or {values}>` where the operator is a
//! function (`StringEquals`, `StringEqualsIgnoreCase`, `GuidEquals`, their `Not` forms,
//! `StringStartsWith`, `StringLike`, `Numeric*`, with `IgnoreCase` variants) optionally under a
//! cross-product quantifier (`ForAnyOfAnyValues:`, `ForAllOfAnyValues:`, `ForAnyOfAllValues:`,
//! `ForAllOfAllValues:`). `AND` binds tighter than `OR` (Azure asks for parentheses when they
//! are mixed; the conditions Microsoft's templates generate always have them).
//!
//! The attributes evaluated are those of role assignment management ("Authorization actions
//! and attributes", `conditions-authorization-actions-attributes.md`): for
//! `Microsoft.Authorization/roleAssignments/write` the request's `RoleDefinitionId`,
//! `PrincipalId` and `PrincipalType`; for `/delete` the same three of the existing assignment
//! (`@Resource`). An attribute a request does not have is an empty set of values.

use std::collections::HashMap;
use std::fmt;

use crate::rbac;

/// Where an attribute comes from (`@Request[...]`, `@Resource[...]`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    Request,
    Resource,
    Principal,
    Environment,
}

impl Source {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "request" => Some(Self::Request),
            "resource" => Some(Self::Resource),
            "principal" => Some(Self::Principal),
            "environment" => Some(Self::Environment),
            _ => None,
        }
    }
}

/// The role assignment attribute names (the part inside `@Source[...]`).
pub(crate) const ROLE_DEFINITION_ID: &str =
    "Microsoft.Authorization/roleAssignments:RoleDefinitionId";
pub(crate) const PRINCIPAL_ID: &str = "Microsoft.Authorization/roleAssignments:PrincipalId";
pub(crate) const PRINCIPAL_TYPE: &str = "Microsoft.Authorization/roleAssignments:PrincipalType";

/// What a condition is evaluated against: the action, its sub-operation, and attribute values.
#[derive(Clone, Debug, Default)]
pub(crate) struct Facts {
    action: String,
    sub_operation: Option<String>,
    values: HashMap<(Source, String), Vec<String>>,
}

impl Facts {
    pub fn new(action: &str) -> Self {
        Self {
            action: action.to_owned(),
            ..Self::default()
        }
    }

    /// Adds an attribute (names compare case-insensitively); `None` leaves it absent.
    pub fn with(mut self, source: Source, attribute: &str, value: Option<&str>) -> Self {
        if let Some(v) = value {
            self.values
                .entry((source, attribute.to_ascii_lowercase()))
                .or_default()
                .push(v.to_owned());
        }
        self
    }

    /// The facts of a role assignment write (`@Request`) or delete (`@Resource`).
    pub fn role_assignment(
        action: &str,
        source: Source,
        role_definition_guid: Option<&str>,
        principal_id: Option<&str>,
        principal_type: Option<&str>,
    ) -> Self {
        Self::new(action)
            .with(source, ROLE_DEFINITION_ID, role_definition_guid)
            .with(source, PRINCIPAL_ID, principal_id)
            .with(source, PRINCIPAL_TYPE, principal_type)
    }

    fn get(&self, source: Source, attribute: &str) -> Vec<String> {
        if attribute.eq_ignore_ascii_case("subOperation") {
            return self.sub_operation.iter().cloned().collect();
        }
        self.values
            .get(&(source, attribute.to_ascii_lowercase()))
            .cloned()
            .unwrap_or_default()
    }
}

/// A parsed condition.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    ActionMatches(String),
    SubOperationMatches(String),
    Compare {
        source: Source,
        attribute: String,
        quantifier: Quantifier,
        function: Function,
        values: Vec<String>,
    },
}

/// Cross-product quantifiers: over the attribute's values (left) and the listed values (right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quantifier {
    /// A plain operator: the attribute's (single) value against the value(s) given.
    Plain,
    AnyOfAny,
    AllOfAny,
    AnyOfAll,
    AllOfAll,
}

/// A comparison function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Function {
    kind: FunctionKind,
    ignore_case: bool,
    negated: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FunctionKind {
    StringEquals,
    StringStartsWith,
    StringLike,
    GuidEquals,
    NumericEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
}

impl Function {
    fn parse(name: &str) -> Option<Self> {
        let (base, ignore_case) = match name.strip_suffix("IgnoreCase") {
            Some(b) => (b, true),
            None => (name, false),
        };
        let (kind, negated) = match base {
            "StringEquals" => (FunctionKind::StringEquals, false),
            "StringNotEquals" => (FunctionKind::StringEquals, true),
            "StringStartsWith" => (FunctionKind::StringStartsWith, false),
            "StringNotStartsWith" => (FunctionKind::StringStartsWith, true),
            "StringLike" => (FunctionKind::StringLike, false),
            "StringNotLike" => (FunctionKind::StringLike, true),
            "GuidEquals" if !ignore_case => (FunctionKind::GuidEquals, false),
            "GuidNotEquals" if !ignore_case => (FunctionKind::GuidEquals, true),
            "NumericEquals" if !ignore_case => (FunctionKind::NumericEquals, false),
            "NumericNotEquals" if !ignore_case => (FunctionKind::NumericEquals, true),
            "NumericLessThan" if !ignore_case => (FunctionKind::NumericLessThan, false),
            "NumericLessThanEquals" if !ignore_case => (FunctionKind::NumericLessThanEquals, false),
            "NumericGreaterThan" if !ignore_case => (FunctionKind::NumericGreaterThan, false),
            "NumericGreaterThanEquals" if !ignore_case => {
                (FunctionKind::NumericGreaterThanEquals, false)
            }
            _ => return None,
        };
        Some(Self {
            kind,
            ignore_case,
            negated,
        })
    }

    fn apply(self, left: &str, right: &str) -> bool {
        let fold = |s: &str| {
            if self.ignore_case {
                s.to_lowercase()
            } else {
                s.to_owned()
            }
        };
        let number = |s: &str| s.trim().parse::<i64>().ok();
        let holds = match self.kind {
            FunctionKind::StringEquals => fold(left) == fold(right),
            FunctionKind::StringStartsWith => fold(left).starts_with(&fold(right)),
            FunctionKind::StringLike => like(&fold(right), &fold(left)),
            FunctionKind::GuidEquals => match (
                uuid::Uuid::try_parse(left.trim()),
                uuid::Uuid::try_parse(right.trim()),
            ) {
                (Ok(l), Ok(r)) => l == r,
                _ => false,
            },
            FunctionKind::NumericEquals => number(left).is_some() && number(left) == number(right),
            FunctionKind::NumericLessThan => cmp(number(left), number(right), |l, r| l < r),
            FunctionKind::NumericLessThanEquals => cmp(number(left), number(right), |l, r| l <= r),
            FunctionKind::NumericGreaterThan => cmp(number(left), number(right), |l, r| l > r),
            FunctionKind::NumericGreaterThanEquals => {
                cmp(number(left), number(right), |l, r| l >= r)
            }
        };
        holds != self.negated
    }
}

fn cmp(l: Option<i64>, r: Option<i64>, f: impl Fn(i64, i64) -> bool) -> bool {
    matches!((l, r), (Some(l), Some(r)) if f(l, r))
}

/// `StringLike`: `*` any run, `?` one character, `\*` and `\?` literal.
fn like(pattern: &str, text: &str) -> bool {
    let mut p: Vec<(char, bool)> = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => p.push((n, true)),
                None => p.push(('\\', true)),
            },
            c => p.push((c, false)),
        }
    }
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(('*', false)) => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&(c, literal)) if (c == '?' && !literal) || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&(c, literal)| c == '*' && !literal)
}

impl Expr {
    /// Whether the condition holds for these facts.
    pub fn evaluate(&self, facts: &Facts) -> bool {
        match self {
            Expr::And(a, b) => a.evaluate(facts) && b.evaluate(facts),
            Expr::Or(a, b) => a.evaluate(facts) || b.evaluate(facts),
            Expr::Not(e) => !e.evaluate(facts),
            Expr::ActionMatches(pattern) => rbac::action_matches(pattern, &facts.action),
            Expr::SubOperationMatches(s) => facts
                .sub_operation
                .as_deref()
                .is_some_and(|o| o.eq_ignore_ascii_case(s)),
            Expr::Compare {
                source,
                attribute,
                quantifier,
                function,
                values,
            } => {
                let left = facts.get(*source, attribute);
                let any_right = |l: &String| values.iter().any(|r| function.apply(l, r));
                let all_right = |l: &String| values.iter().all(|r| function.apply(l, r));
                match quantifier {
                    Quantifier::Plain | Quantifier::AnyOfAny => left.iter().any(any_right),
                    Quantifier::AllOfAny => left.iter().all(any_right),
                    Quantifier::AnyOfAll => left.iter().any(all_right),
                    Quantifier::AllOfAll => left.iter().all(all_right),
                }
            }
        }
    }
}

/// Why a condition does not parse: the byte offset and what was expected there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.offset, self.message)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Bang,
    And,
    Or,
    /// `'...'`
    Quoted(String),
    /// `@Source[attribute]`
    Attribute(Source, String),
    /// Keywords, operators, GUIDs and numbers.
    Word(String),
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |offset: usize, message: String| ParseError { offset, message };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => out.push((start, Token::LParen)),
            b')' => out.push((start, Token::RParen)),
            b'{' => out.push((start, Token::LBrace)),
            b'}' => out.push((start, Token::RBrace)),
            b',' => out.push((start, Token::Comma)),
            b'!' => out.push((start, Token::Bang)),
            b'&' | b'|' => {
                if bytes.get(i + 1) != Some(&c) {
                    return Err(err(
                        start,
                        format!("`{}` alone is not an operator", c as char),
                    ));
                }
                i += 1;
                out.push((start, if c == b'&' { Token::And } else { Token::Or }));
            }
            b'\'' => {
                let rest = &text[i + 1..];
                let end = rest
                    .find('\'')
                    .ok_or_else(|| err(start, "unterminated quoted value".into()))?;
                out.push((start, Token::Quoted(rest[..end].to_owned())));
                i += end + 1;
            }
            b'@' => {
                let rest = &text[i + 1..];
                let open = rest
                    .find('[')
                    .ok_or_else(|| err(start, "an attribute is `@Source[name]`".into()))?;
                let close = rest[open..]
                    .find(']')
                    .map(|c| c + open)
                    .ok_or_else(|| err(start, "unterminated attribute name".into()))?;
                let source = Source::parse(&rest[..open]).ok_or_else(|| {
                    err(
                        start,
                        format!(
                            "unknown attribute source `@{}` (Request, Resource, Principal or Environment)",
                            &rest[..open]
                        ),
                    )
                })?;
                out.push((
                    start,
                    Token::Attribute(source, rest[open + 1..close].trim().to_owned()),
                ));
                i += close + 1;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.' => {
                let mut j = i;
                while j < bytes.len()
                    && (bytes[j].is_ascii_alphanumeric() || b"_-.:".contains(&bytes[j]))
                {
                    j += 1;
                }
                let word = &text[i..j];
                out.push((
                    start,
                    match word.to_ascii_uppercase().as_str() {
                        "AND" => Token::And,
                        "OR" => Token::Or,
                        "NOT" => Token::Bang,
                        _ => Token::Word(word.to_owned()),
                    },
                ));
                i = j;
                continue;
            }
            other => {
                return Err(err(
                    start,
                    format!("unexpected character `{}`", other as char),
                ));
            }
        }
        i += 1;
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.len, |(o, _)| *o)
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            offset: self.offset(),
            message: message.into(),
        })
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: &Token, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            self.fail(format!("expected {what}"))
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.peek() == Some(&Token::Bang) {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        match self.peek().cloned() {
            Some(Token::LParen) => {
                self.pos += 1;
                let e = self.or()?;
                self.expect(&Token::RParen, "`)`")?;
                Ok(e)
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("ActionMatches") => {
                self.pos += 1;
                Ok(Expr::ActionMatches(self.braced_string()?))
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("SubOperationMatches") => {
                self.pos += 1;
                Ok(Expr::SubOperationMatches(self.braced_string()?))
            }
            Some(Token::Attribute(source, attribute)) => {
                self.pos += 1;
                let Some(Token::Word(op)) = self.peek().cloned() else {
                    return self.fail(format!("expected an operator after @[{attribute}]"));
                };
                let (quantifier, name) = match op.split_once(':') {
                    Some((q, f)) => (
                        match q {
                            "ForAnyOfAnyValues" => Quantifier::AnyOfAny,
                            "ForAllOfAnyValues" => Quantifier::AllOfAny,
                            "ForAnyOfAllValues" => Quantifier::AnyOfAll,
                            "ForAllOfAllValues" => Quantifier::AllOfAll,
                            other => return self.fail(format!("unknown quantifier `{other}`")),
                        },
                        f,
                    ),
                    None => (Quantifier::Plain, op.as_str()),
                };
                let Some(function) = Function::parse(name) else {
                    return self.fail(format!("unknown operator `{name}`"));
                };
                self.pos += 1;
                let values = self.values()?;
                Ok(Expr::Compare {
                    source,
                    attribute,
                    quantifier,
                    function,
                    values,
                })
            }
            Some(_) => self.fail("expected `(`, `!`, ActionMatches or an @attribute"),
            None => self.fail("the condition ends too early"),
        }
    }

    fn braced_string(&mut self) -> Result<String, ParseError> {
        self.expect(&Token::LBrace, "`{`")?;
        let Some(Token::Quoted(s)) = self.next() else {
            self.pos -= 1;
            return self.fail("expected a quoted action");
        };
        self.expect(&Token::RBrace, "`}`")?;
        Ok(s)
    }

    fn value(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Some(Token::Quoted(s) | Token::Word(s)) => Ok(s),
            _ => {
                self.pos -= 1;
                self.fail("expected a value")
            }
        }
    }

    fn values(&mut self) -> Result<Vec<String>, ParseError> {
        if self.peek() != Some(&Token::LBrace) {
            return Ok(vec![self.value()?]);
        }
        self.pos += 1;
        let mut out = vec![self.value()?];
        while self.peek() == Some(&Token::Comma) {
            self.pos += 1;
            out.push(self.value()?);
        }
        self.expect(&Token::RBrace, "`,` or `}`")?;
        Ok(out)
    }
}

/// Parses a condition (`conditionVersion` 2.0).
pub(crate) fn parse(text: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        len: text.len(),
    };
    let e = p.or()?;
    if p.pos < p.tokens.len() {
        return p.fail("unexpected text after the end of the condition");
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITE: &str = "Microsoft.Authorization/roleAssignments/write";
    const DELETE: &str = "Microsoft.Authorization/roleAssignments/delete";
    const BACKUP_CONTRIBUTOR: &str = "5e467623-bb1f-42f4-a55d-6e525e11384b";
    const BACKUP_READER: &str = "a795c7a0-d4a2-40c1-ae25-d81f01202912";
    const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";

    /// Microsoft's "Constrain roles and principal types" example, as its PowerShell tab writes
    /// it (delegate-role-assignments-examples.md).
    const CONSTRAIN_ROLES_AND_TYPES: &str = "((!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {5e467623-bb1f-42f4-a55d-6e525e11384b, a795c7a0-d4a2-40c1-ae25-d81f01202912} AND @Request[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {'User', 'Group'})) AND ((!(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})) OR (@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {5e467623-bb1f-42f4-a55d-6e525e11384b, a795c7a0-d4a2-40c1-ae25-d81f01202912} AND @Resource[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {'User', 'Group'}))";

    fn write(role: &str, kind: &str) -> Facts {
        Facts::role_assignment(WRITE, Source::Request, Some(role), Some("p"), Some(kind))
    }

    fn delete(role: &str, kind: &str) -> Facts {
        Facts::role_assignment(DELETE, Source::Resource, Some(role), Some("p"), Some(kind))
    }

    #[test]
    fn microsofts_constrain_roles_and_principal_types_example() {
        let c = parse(CONSTRAIN_ROLES_AND_TYPES).unwrap();
        assert!(c.evaluate(&write(BACKUP_READER, "Group")));
        assert!(c.evaluate(&write(&BACKUP_CONTRIBUTOR.to_uppercase(), "user")));
        assert!(!c.evaluate(&write(READER, "User")), "role not listed");
        assert!(
            !c.evaluate(&write(BACKUP_READER, "ServicePrincipal")),
            "type not listed"
        );
        assert!(c.evaluate(&delete(BACKUP_READER, "User")));
        assert!(!c.evaluate(&delete(READER, "User")));
        // The write side never looks at @Resource, the delete side never at @Request.
        assert!(!c.evaluate(&Facts::role_assignment(
            WRITE,
            Source::Resource,
            Some(BACKUP_READER),
            None,
            Some("User")
        )));
        // Other actions are not constrained.
        assert!(c.evaluate(&Facts::new("Microsoft.Storage/storageAccounts/read")));
    }

    #[test]
    fn the_multi_line_form_parses_to_the_same_condition() {
        let multi = "(\n (\n  !(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})\n )\n OR \n (\n  @Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {5e467623-bb1f-42f4-a55d-6e525e11384b, a795c7a0-d4a2-40c1-ae25-d81f01202912}\n  AND\n  @Request[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {'User', 'Group'}\n )\n)\nAND\n(\n (\n  !(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})\n )\n OR \n (\n  @Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {5e467623-bb1f-42f4-a55d-6e525e11384b, a795c7a0-d4a2-40c1-ae25-d81f01202912}\n  AND\n  @Resource[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {'User', 'Group'}\n )\n)";
        assert_eq!(
            parse(multi).unwrap(),
            parse(CONSTRAIN_ROLES_AND_TYPES).unwrap()
        );
    }

    #[test]
    fn operators_quantifiers_and_precedence() {
        let facts =
            Facts::new("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read")
                .with(Source::Resource, "tags", Some("red"))
                .with(Source::Resource, "tags", Some("blue"))
                .with(Source::Request, "n", Some("10"));
        let holds = |c: &str| parse(c).unwrap().evaluate(&facts);
        assert!(holds(
            "@Resource[tags] ForAnyOfAnyValues:StringEquals {'blue', 'green'}"
        ));
        assert!(!holds(
            "@Resource[tags] ForAnyOfAnyValues:StringEquals {'orange', 'green'}"
        ));
        assert!(holds(
            "@Resource[tags] ForAllOfAnyValues:StringEquals {'orange', 'red', 'blue'}"
        ));
        assert!(!holds(
            "@Resource[tags] ForAllOfAnyValues:StringEquals {'red', 'green'}"
        ));
        assert!(holds(
            "@Resource[TAGS] ForAnyOfAnyValues:StringEqualsIgnoreCase {'BLUE'}"
        ));
        assert!(!holds(
            "@Resource[tags] ForAnyOfAnyValues:StringEquals {'BLUE'}"
        ));
        assert!(holds(
            "@Resource[tags] ForAnyOfAllValues:StringNotEquals {'red', 'green'}"
        ));
        assert!(holds("@Resource[tags] ForAnyOfAnyValues:StringLike 'b?u*'"));
        assert!(holds(
            "@Resource[tags] ForAnyOfAnyValues:StringStartsWith 're'"
        ));
        assert!(holds(
            "@Request[n] NumericLessThan 15 && @Request[n] NumericGreaterThanEquals 10"
        ));
        assert!(!holds("@Request[n] NumericGreaterThan 10"));
        // An absent attribute matches nothing.
        assert!(!holds(
            "@Request[missing] ForAnyOfAnyValues:StringEquals {'x'}"
        ));
        assert!(holds("NOT @Request[missing] StringEquals 'x'"));
        // AND binds tighter than OR.
        assert!(holds(
            "ActionMatches{'*/read'} OR ActionMatches{'x'} AND ActionMatches{'y'}"
        ));
        assert!(!holds(
            "(ActionMatches{'*/read'} OR ActionMatches{'x'}) AND ActionMatches{'y'}"
        ));
        assert!(holds(
            "ActionMatches{'Microsoft.Storage/*'} || ActionMatches{'x'}"
        ));
        assert!(!holds("SubOperationMatches{'Blob.List'}"));
    }

    #[test]
    fn malformed_conditions_name_the_place() {
        for (text, offset) in [
            ("(ActionMatches{'x'}", 19),
            ("@Request[x] Frobnicates {'a'}", 12),
            ("@Request[x] ForSomeValues:StringEquals 'a'", 12),
            ("@Nowhere[x] StringEquals 'a'", 0),
            ("ActionMatches{'x'} AND", 22),
            ("ActionMatches{'x'} ActionMatches{'y'}", 19),
            ("@Request[x] StringEquals {'a' 'b'}", 30),
            ("@Request[x] StringEquals 'a", 25),
            ("a & b", 2),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.offset, offset, "{text}: {e}");
        }
    }
}
