//! Name patterns of ACL rules and JWT grants: a literal name, `prefix:NAME`, or a glob with `*`
//! (any run of characters, empty included) and `?` (exactly one character).
//!
//! Globs are matched by simulating their automaton over the name with bit sets (shift-and), so
//! a match costs O(|name| · ⌈|pattern| / 64⌉) whatever the pattern: no backtracking, no
//! pattern that makes matching blow up.

use std::collections::HashMap;

/// A parsed pattern (`config::security::check_pattern` has already refused the empty ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// The name itself.
    Literal(String),
    /// Every name starting with this (`prefix:logs-`).
    Prefix(String),
    /// A glob with at least one `*` or `?`.
    Glob(Glob),
}

impl Pattern {
    /// Reads `prefix:NAME`, a glob (any `*` or `?`), or else a literal name.
    pub fn parse(p: &str) -> Pattern {
        if let Some(rest) = p.strip_prefix("prefix:") {
            Pattern::Prefix(rest.to_string())
        } else if p.contains(['*', '?']) {
            Pattern::Glob(Glob::new(p))
        } else {
            Pattern::Literal(p.to_string())
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Literal(l) => l == name,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
            Pattern::Glob(g) => g.matches(name),
        }
    }
}

/// Whether `name` matches the pattern written `p`, without keeping the parsed pattern (JWT
/// grants, which come with each request).
pub fn matches(p: &str, name: &str) -> bool {
    if let Some(rest) = p.strip_prefix("prefix:") {
        name.starts_with(rest)
    } else if p.contains(['*', '?']) {
        Glob::new(p).matches(name)
    } else {
        p == name
    }
}

/// A glob compiled to bit masks over its positions. Position `i` is the state "the first `i`
/// pattern items are matched"; runs of `*` are one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// Pattern items, `*` runs collapsed; kept to compare and print.
    items: Vec<Item>,
    /// Words per bit set: `items.len() + 1` states.
    words: usize,
    /// Per literal character, the items that are that character.
    literal: HashMap<char, Vec<u64>>,
    /// Items that are `?`.
    any: Vec<u64>,
    /// Items that are `*`.
    star: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Char(char),
    One,
    Star,
}

impl Glob {
    pub fn new(p: &str) -> Glob {
        let mut items = Vec::new();
        for c in p.chars() {
            let item = match c {
                '*' => Item::Star,
                '?' => Item::One,
                c => Item::Char(c),
            };
            // `**` matches what `*` matches; one star keeps the closure below a single step.
            if !(item == Item::Star && items.last() == Some(&Item::Star)) {
                items.push(item);
            }
        }
        let words = (items.len() + 1).div_ceil(64);
        let mut literal: HashMap<char, Vec<u64>> = HashMap::new();
        let mut any = vec![0; words];
        let mut star = vec![0; words];
        for (i, item) in items.iter().enumerate() {
            let set = match item {
                Item::Char(c) => literal.entry(*c).or_insert_with(|| vec![0; words]),
                Item::One => &mut any,
                Item::Star => &mut star,
            };
            set[i / 64] |= 1 << (i % 64);
        }
        Glob {
            items,
            words,
            literal,
            any,
            star,
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        let mut states = vec![0u64; self.words];
        states[0] = 1;
        self.close(&mut states);
        let mut next = vec![0u64; self.words];
        let none = vec![0u64; self.words];
        for c in name.chars() {
            let lit = self.literal.get(&c).unwrap_or(&none);
            // An item that takes `c` moves its state one on; a star stays where it is.
            let mut carry = 0u64;
            let mut alive = 0u64;
            for w in 0..self.words {
                let takes = states[w] & (lit[w] | self.any[w]);
                let moved = (takes << 1) | carry;
                carry = takes >> 63;
                next[w] = moved | (states[w] & self.star[w]);
                alive |= next[w];
            }
            if alive == 0 {
                return false;
            }
            std::mem::swap(&mut states, &mut next);
            self.close(&mut states);
        }
        let end = self.items.len();
        states[end / 64] & (1 << (end % 64)) != 0
    }

    /// A star may match nothing: a state at a star also reaches the state after it. Stars are
    /// never adjacent, so one step is the whole closure.
    fn close(&self, states: &mut [u64]) {
        let mut carry = 0u64;
        for (word, star) in states.iter_mut().zip(&self.star) {
            let at_star = *word & star;
            *word |= (at_star << 1) | carry;
            carry = at_star >> 63;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The textbook recursive matcher: obviously right, exponential in the worst case.
    fn reference(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len()).any(|i| reference(&p[1..], &s[i..])),
            Some('?') => !s.is_empty() && reference(&p[1..], &s[1..]),
            Some(c) => s.first() == Some(c) && reference(&p[1..], &s[1..]),
        }
    }

    /// The textbook dynamic program, `dp[i][j]`: the first `i` pattern items match the first `j`
    /// characters. Quadratic, for the long cases.
    fn reference_dp(p: &[char], s: &[char]) -> bool {
        let mut dp = vec![vec![false; s.len() + 1]; p.len() + 1];
        dp[0][0] = true;
        for i in 1..=p.len() {
            for j in 0..=s.len() {
                dp[i][j] = match p[i - 1] {
                    '*' => dp[i - 1][j] || (j > 0 && dp[i][j - 1]),
                    '?' => j > 0 && dp[i - 1][j - 1],
                    c => j > 0 && s[j - 1] == c && dp[i - 1][j - 1],
                };
            }
        }
        dp[p.len()][s.len()]
    }

    fn glob(p: &str, s: &str) -> bool {
        Glob::new(p).matches(s)
    }

    #[test]
    fn pattern_forms() {
        let cases = [
            ("orders", "orders", true),
            ("orders", "orders-eu", false),
            ("orders", "order", false),
            ("prefix:logs-", "logs-web", true),
            ("prefix:logs-", "logs-", true),
            ("prefix:logs-", "log", false),
            ("prefix:logs-", "xlogs-web", false),
            ("app-*", "app-", true),
            ("app-*", "app-billing", true),
            ("app-*", "ap", false),
            ("*-dlq", "orders-dlq", true),
            ("*-dlq", "orders-dlq-2", false),
            ("t?", "t1", true),
            ("t?", "t", false),
            ("t?", "t12", false),
            ("*", "", true),
            ("*", "anything", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXcYb", false),
            ("a**b", "ab", true),
            ("ü?", "üß", true),
        ];
        for (p, name, want) in cases {
            assert_eq!(Pattern::parse(p).matches(name), want, "{p} vs {name}");
            assert_eq!(matches(p, name), want, "{p} vs {name} (unparsed)");
        }
        assert_eq!(Pattern::parse("x"), Pattern::Literal("x".into()));
        assert_eq!(Pattern::parse("prefix:a*"), Pattern::Prefix("a*".into()));
        assert!(matches!(Pattern::parse("a?"), Pattern::Glob(_)));
    }

    #[test]
    fn long_patterns_span_words() {
        // More than 64 states: the carry between words must work.
        let p = format!("{}*{}", "a".repeat(70), "b".repeat(70));
        let yes = format!("{}xyz{}", "a".repeat(70), "b".repeat(70));
        let no = format!("{}xyz{}", "a".repeat(70), "b".repeat(69));
        assert!(glob(&p, &yes));
        assert!(!glob(&p, &no));
        let q = "?".repeat(130);
        assert!(glob(&q, &"z".repeat(130)));
        assert!(!glob(&q, &"z".repeat(129)));
        assert!(!glob(&q, &"z".repeat(131)));
    }

    #[test]
    fn a_pathological_glob_stays_fast() {
        // Exponential for a backtracking matcher; linear here.
        let p = format!("{}b", "a*".repeat(40));
        let name = "a".repeat(100_000);
        let start = std::time::Instant::now();
        assert!(!glob(&p, &name));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn glob_agrees_with_the_reference(p in "[ab*?]{0,10}", s in "[abc]{0,12}") {
            let pc: Vec<char> = p.chars().collect();
            let sc: Vec<char> = s.chars().collect();
            let want = reference(&pc, &sc);
            prop_assert_eq!(reference_dp(&pc, &sc), want);
            prop_assert_eq!(glob(&p, &s), want, "pattern {:?} name {:?}", p, s);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn long_globs_agree_with_the_reference(
            items in proptest::collection::vec(prop_oneof![Just('a'), Just('b'), Just('?')], 60..75),
            stars in proptest::collection::vec(0usize..75, 0..=5),
            fills in proptest::collection::vec("[ab]{0,4}", 6),
            flip in proptest::option::of(0usize..90),
        ) {
            // More than 64 states, and names built from the pattern so that most match.
            let mut p = items;
            for s in &stars {
                let at = (*s).min(p.len());
                p.insert(at, '*');
            }
            let mut name = Vec::new();
            let mut fill = fills.iter();
            for c in &p {
                match c {
                    '*' => name.extend(fill.next().map(|f| f.chars().collect::<Vec<_>>()).unwrap_or_default()),
                    '?' => name.push('b'),
                    c => name.push(*c),
                }
            }
            if let Some(i) = flip {
                if i < name.len() {
                    name[i] = if name[i] == 'a' { 'b' } else { 'a' };
                }
            }
            let ps: String = p.iter().collect();
            let ns: String = name.iter().collect();
            prop_assert_eq!(glob(&ps, &ns), reference_dp(&p, &name), "pattern {:?} name {:?}", ps, ns);
        }
    }
}
