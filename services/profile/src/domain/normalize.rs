//! Normalisation and validation of single values: texts, e-mails, phones,
//! countries, currencies, language tags, tags, owner ids, web sites, dates and
//! money. Each function returns the normalised value or why it is refused.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use super::country;

/// Trims `raw`, refuses control characters and values longer than `max`
/// characters (Unicode scalar values). Empty means "not set".
pub fn text(raw: &str, max: usize) -> Result<String, String> {
    let t = raw.trim();
    if t.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    let n = t.chars().count();
    if n > max {
        return Err(format!("at most {max} characters (got {n})"));
    }
    Ok(t.to_string())
}

/// Longest e-mail address accepted.
pub const MAX_EMAIL: usize = 254;

fn is_email_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || ".!#$%&'*+/=?^_`{|}~-".contains(c)
}

fn is_email_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Trims and lower-cases an e-mail address, then checks it against the WHATWG
/// HTML "valid e-mail address" syntax and the 254-character limit.
pub fn email(raw: &str) -> Result<String, String> {
    let e = raw.trim().to_lowercase();
    if e.is_empty() {
        return Err("an e-mail address is required".into());
    }
    if e.chars().count() > MAX_EMAIL {
        return Err(format!("at most {MAX_EMAIL} characters"));
    }
    let Some((local, domain)) = e.split_once('@') else {
        return Err("not an e-mail address: no \"@\"".into());
    };
    if local.is_empty() || !local.chars().all(is_email_local_char) {
        return Err("not a valid e-mail address: bad characters before \"@\"".into());
    }
    if domain.is_empty() || !domain.split('.').all(is_email_label) {
        return Err("not a valid e-mail address: bad domain".into());
    }
    Ok(e)
}

/// An upper-cased, officially assigned ISO 3166-1 alpha-2 code. Empty stays
/// empty (not set).
pub fn country_code(raw: &str) -> Result<String, String> {
    let c = raw.trim().to_ascii_uppercase();
    if c.is_empty() {
        return Ok(c);
    }
    if country::is_assigned(&c) {
        Ok(c)
    } else {
        Err(format!(
            "{:?} is not an officially assigned ISO 3166-1 alpha-2 country code",
            raw.trim()
        ))
    }
}

/// Normalises a phone number to E.164. A number without an international
/// prefix is read in `region` (an ISO 3166-1 alpha-2 code), and refused when
/// there is none. The number must be valid for its region.
pub fn phone(raw: &str, region: &str) -> Result<String, String> {
    let p = raw.trim();
    if p.is_empty() {
        return Err("a phone number is required".into());
    }
    if p.chars().count() > 64 || p.chars().any(char::is_control) {
        return Err("not a phone number".into());
    }
    // Digits and the usual separators only: letters would be read as vanity
    // digits ("1-800-FLOWERS"), turning arbitrary text into a number.
    if !p
        .chars()
        .all(|c| c.is_ascii_digit() || " +()-./".contains(c))
    {
        return Err(
            "not a phone number: only digits, spaces, a leading \"+\" and \"()-./\" are allowed"
                .into(),
        );
    }
    let international = p.starts_with('+');
    let id = if international {
        None
    } else if region.is_empty() {
        return Err(
            "has no international prefix (\"+\"), and there is no country_code to read it in"
                .into(),
        );
    } else {
        match region.parse::<phonenumber::country::Id>() {
            Ok(id) => Some(id),
            Err(_) => return Err(format!("cannot read phone numbers of region {region}")),
        }
    };
    let number = phonenumber::parse(id, p).map_err(|_| "not a phone number".to_string())?;
    if !phonenumber::is_valid(&number) {
        return Err("not a valid phone number for its region".into());
    }
    let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
    // E.164 numbers have at most 15 digits.
    if e164.len() > 16 {
        return Err("not a valid phone number: more than 15 digits".into());
    }
    Ok(e164)
}

/// The national significant number of an E.164 number, the part compared
/// across country prefixes by duplicate detection.
pub fn phone_national(e164: &str) -> String {
    match phonenumber::parse(None, e164) {
        Ok(n) => n.national().value().to_string(),
        Err(_) => e164.trim_start_matches('+').to_string(),
    }
}

/// An upper-case ISO 4217 currency code.
pub fn currency(raw: &str) -> Result<String, String> {
    let c = raw.trim().to_ascii_uppercase();
    if c.is_empty() {
        return Err("a currency code is required".into());
    }
    match iso_currency::Currency::from_code(&c) {
        Some(_) => Ok(c),
        None => Err(format!("{:?} is not an ISO 4217 currency code", raw.trim())),
    }
}

/// Case of each subtag of a BCP 47 tag: language lower, script title,
/// region upper, everything else lower (RFC 5646 section 2.1.1).
fn canonical_case(tag: &str) -> String {
    let mut out = Vec::new();
    let mut after_singleton = false;
    for (i, sub) in tag.split('-').enumerate() {
        let s = if i == 0 || after_singleton {
            sub.to_ascii_lowercase()
        } else if sub.len() == 1 {
            after_singleton = true;
            sub.to_ascii_lowercase()
        } else if sub.len() == 4 && sub.chars().all(|c| c.is_ascii_alphabetic()) {
            let lower = sub.to_ascii_lowercase();
            let mut cs = lower.chars();
            match cs.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + cs.as_str(),
                None => lower,
            }
        } else if sub.len() == 2 && sub.chars().all(|c| c.is_ascii_alphabetic()) {
            sub.to_ascii_uppercase()
        } else {
            sub.to_ascii_lowercase()
        };
        out.push(s);
    }
    out.join("-")
}

/// A well-formed BCP 47 language tag in canonical case, at most 35
/// characters. Empty stays empty.
pub fn locale(raw: &str) -> Result<String, String> {
    let t = raw.trim();
    if t.is_empty() {
        return Ok(String::new());
    }
    if t.len() > 35 {
        return Err("at most 35 characters".into());
    }
    if !t.is_ascii() || language_tags::LanguageTag::parse(t).is_err() {
        return Err(format!(
            "{t:?} is not a well-formed BCP 47 language tag (e.g. \"en-GB\")"
        ));
    }
    Ok(canonical_case(t))
}

/// Most tags a customer may carry.
pub const MAX_TAGS: usize = 50;

/// A tag: trimmed, lower-cased, 1 to 64 characters of letters, digits and
/// `_-:./`, starting with a letter or digit.
pub fn tag(raw: &str) -> Result<String, String> {
    let t = raw.trim().to_lowercase();
    let n = t.chars().count();
    if n == 0 || n > 64 {
        return Err("a tag has 1 to 64 characters".into());
    }
    let mut chars = t.chars();
    let first_ok = chars.next().is_some_and(char::is_alphanumeric);
    if !first_ok
        || !t
            .chars()
            .all(|c| c.is_alphanumeric() || "_-:./".contains(c))
    {
        return Err(
            "a tag holds letters, digits and \"_-:./\", and starts with a letter or digit".into(),
        );
    }
    Ok(t)
}

/// An account manager id: empty, or 1 to 128 characters of `[A-Za-z0-9._@:-]`.
pub fn owner_id(raw: &str) -> Result<String, String> {
    let t = raw.trim();
    if t.len() > 128
        || !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@:-".contains(c))
    {
        return Err("1 to 128 characters of letters, digits and \"._@:-\"".into());
    }
    Ok(t.to_string())
}

/// An external identifier's issuing system: 1 to 64 characters of `[a-z0-9_.-]`.
pub fn system(raw: &str) -> Result<String, String> {
    let t = raw.trim();
    if t.is_empty() || t.len() > 64 {
        return Err("a system of 1 to 64 characters is required".into());
    }
    if !t
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
    {
        return Err("a system holds lower-case letters, digits and \"_.-\"".into());
    }
    Ok(t.to_string())
}

/// An external identifier's value: trimmed, 1 to 256 characters.
pub fn external_value(raw: &str) -> Result<String, String> {
    let t = text(raw, 256)?;
    if t.is_empty() {
        return Err("a value of 1 to 256 characters is required".into());
    }
    Ok(t)
}

/// An absolute http(s) URL of at most 2,048 characters, without control
/// characters. Empty stays empty.
pub fn website(raw: &str) -> Result<String, String> {
    let t = raw.trim();
    if t.is_empty() {
        return Ok(String::new());
    }
    if t.chars().count() > 2048 {
        return Err("at most 2,048 characters".into());
    }
    // The URL parser skips control characters (a NUL, a line break) that the
    // stored text would keep: refuse them, like in every other text.
    if t.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    match url::Url::parse(t) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
            Ok(t.to_string())
        }
        _ => Err("an absolute http or https URL, e.g. \"https://acme.example\"".into()),
    }
}

/// A calendar date as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Date {
    /// Year, or 0 when unknown (birth dates only).
    pub year: i32,
    /// Month, 1..=12.
    pub month: i32,
    /// Day, 1..=31.
    pub day: i32,
}

impl Date {
    /// `YYYY-MM-DD`.
    pub fn iso(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// The date, when the year is known.
    pub fn naive(&self) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(self.year, self.month as u32, self.day as u32)
    }
}

/// Checks a calendar date. `unknown_year_ok` allows year 0 (day and month
/// only, checked against a leap year).
pub fn date(year: i32, month: i32, day: i32, unknown_year_ok: bool) -> Result<Date, String> {
    if year == 0 && !unknown_year_ok {
        return Err("the year must be set (1..=9999)".into());
    }
    if !(0..=9999).contains(&year) {
        return Err("the year must be in 1..=9999".into());
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err("not a calendar date".into());
    }
    let check_year = if year == 0 { 2000 } else { year };
    if NaiveDate::from_ymd_opt(check_year, month as u32, day as u32).is_none() {
        return Err("not a calendar date".into());
    }
    Ok(Date { year, month, day })
}

/// A birth date: a valid date not in the future, with a year from 1900, or
/// year 0 when only the day and month are known.
pub fn birth_date(year: i32, month: i32, day: i32, today: NaiveDate) -> Result<Date, String> {
    let d = date(year, month, day, true)?;
    if year != 0 && year < 1900 {
        return Err("the year must be 1900 or later (or 0 when unknown)".into());
    }
    if let Some(n) = d.naive()
        && n > today
    {
        return Err("a birth date cannot be in the future".into());
    }
    if year != 0 && year > today.year() {
        return Err("a birth date cannot be in the future".into());
    }
    Ok(d)
}

/// An amount of money as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// ISO 4217 code.
    pub currency_code: String,
    /// Whole units.
    pub units: i64,
    /// Billionths.
    pub nanos: i32,
}

/// Checks a non-negative amount in an ISO 4217 currency. Returns one problem
/// per sub-field, as (sub-field, description).
pub fn money(
    currency_code: &str,
    units: i64,
    nanos: i32,
) -> Result<Money, Vec<(&'static str, String)>> {
    let mut problems = Vec::new();
    let code = match currency(currency_code) {
        Ok(c) => c,
        Err(e) => {
            problems.push(("currency_code", e));
            String::new()
        }
    };
    if !(-999_999_999..=999_999_999).contains(&nanos) {
        problems.push(("nanos", "must be in -999,999,999..=999,999,999".to_string()));
    } else if (units > 0 && nanos < 0) || (units < 0 && nanos > 0) {
        problems.push(("nanos", "must have the same sign as units".to_string()));
    }
    if units < 0 || nanos < 0 {
        problems.push(("units", "must not be negative".to_string()));
    }
    if problems.is_empty() {
        Ok(Money {
            currency_code: code,
            units,
            nanos,
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails_are_trimmed_lower_cased_and_checked() {
        assert_eq!(
            email("  Ana.Lopez+Shop@Example.COM ").unwrap(),
            "ana.lopez+shop@example.com"
        );
        for bad in [
            "",
            "ana",
            "ana@",
            "@x.com",
            "ana@-x.com",
            "a b@x.com",
            "ana@x..com",
            "ana@x_y.com",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert!(email(&format!("{}@x.com", "a".repeat(250))).is_err());
        assert!(email("ana@localhost").is_ok());
    }

    #[test]
    fn phones_become_e164() {
        assert_eq!(phone("+34 911 23 45 67", "").unwrap(), "+34911234567");
        assert_eq!(phone("911234567", "ES").unwrap(), "+34911234567");
        assert_eq!(phone("(020) 7946 0000", "GB").unwrap(), "+442079460000");
        assert!(phone("911234567", "").is_err());
        assert!(phone("+34 12", "").is_err());
        assert!(phone("hello", "ES").is_err());
        // Letters are not read as vanity digits (found by identifier_props).
        assert!(phone("%@1640AaA.AaaA.aaa", "DE").is_err());
        assert!(phone("1-800-FLOWERS", "US").is_err());
        assert_eq!(phone_national("+34911234567"), "911234567");
    }

    #[test]
    fn countries_currencies_and_locales() {
        assert_eq!(country_code(" es ").unwrap(), "ES");
        assert!(country_code("UK").is_err());
        assert_eq!(country_code("").unwrap(), "");
        assert_eq!(currency("eur").unwrap(), "EUR");
        assert!(currency("EUX").is_err());
        assert_eq!(locale("EN-gb").unwrap(), "en-GB");
        assert_eq!(locale("zh-hant-tw").unwrap(), "zh-Hant-TW");
        assert_eq!(locale("pt-BR").unwrap(), "pt-BR");
        assert!(locale("en_GB").is_err());
        assert!(locale("not a tag").is_err());
    }

    #[test]
    fn tags_owner_system_website() {
        assert_eq!(tag(" VIP ").unwrap(), "vip");
        assert_eq!(tag("region:es/north").unwrap(), "region:es/north");
        assert!(tag("-x").is_err());
        assert!(tag("a b").is_err());
        assert!(tag("").is_err());
        assert!(owner_id("manager@acme:1").is_ok());
        assert!(owner_id("bad owner").is_err());
        assert!(system("Loyalty").is_err());
        assert!(system("sap.erp-1").is_ok());
        assert!(website("https://acme.example").is_ok());
        assert!(website("ftp://acme.example").is_err());
        assert!(website("acme.example").is_err());
        assert!(website("https://acme.example/a\0b").is_err());
        assert!(website("\0https://acme.example").is_err());
        assert!(website("https://acme.example/\nx").is_err());
    }

    #[test]
    fn dates_and_money() {
        let today = NaiveDate::from_ymd_opt(2025, 6, 1).unwrap();
        assert!(birth_date(1980, 2, 29, today).is_ok());
        assert!(birth_date(1981, 2, 29, today).is_err());
        assert!(birth_date(0, 2, 29, today).is_ok());
        assert!(birth_date(1899, 1, 1, today).is_err());
        assert!(birth_date(2025, 6, 2, today).is_err());
        assert!(date(0, 1, 1, false).is_err());
        assert!(money("EUR", 12, 500_000_000).is_ok());
        assert_eq!(money("EUR", -1, 0).unwrap_err().len(), 1);
        assert_eq!(money("XXZ", 1, -5).unwrap_err().len(), 3);
    }

    proptest! {
        #[test]
        fn email_normalisation_is_idempotent(local in "[a-zA-Z0-9._+-]{1,20}", domain in "[a-z0-9]{1,10}\\.[a-z]{2,5}") {
            let raw = format!("  {local}@{domain} ");
            if let Ok(once) = email(&raw) {
                prop_assert_eq!(email(&once).unwrap(), once.clone());
                prop_assert_eq!(once.clone(), once.to_lowercase());
            }
        }

        #[test]
        fn text_never_exceeds_its_limit(s in "\\PC{0,40}", max in 0usize..30) {
            if let Ok(t) = text(&s, max) {
                prop_assert!(t.chars().count() <= max);
                prop_assert_eq!(t.trim(), t.as_str());
            }
        }
    }
}
