//! Parsing the attribute's arguments: `key = "..", ttl = "..", wait = "..", client = <expr>,
//! on_lost = "cancel" | "ignore", on_busy = "error" | "skip", at_least = "..", at_most = "..",
//! on_error = "hold" | "release", crate = <path>`.
//!
//! A value that is wrong (a bad duration, an unknown choice, a duplicate) is reported and
//! parsing goes on, so that every wrong argument is reported at once; only a syntax error
//! (a missing `=`, a stray token) stops it.

use std::time::Duration;

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, LitStr, Path, Token};

/// The arguments, as written, and what was wrong with them.
pub(crate) struct Args {
    pub(crate) key: Option<LitStr>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) wait: Option<Duration>,
    pub(crate) client: Option<Expr>,
    pub(crate) on_lost: Option<OnLost>,
    pub(crate) on_busy: Option<OnBusy>,
    pub(crate) at_least: Option<Duration>,
    pub(crate) at_most: Option<Duration>,
    pub(crate) on_error: Option<OnError>,
    pub(crate) krate: Option<Path>,
    /// Every wrong value, combined; the arguments above hold only the valid ones.
    pub(crate) errors: Option<syn::Error>,
    /// The arguments given so far (valid or not), to report duplicates.
    seen: Vec<&'static str>,
}

#[derive(Clone, Copy)]
pub(crate) enum OnLost {
    Cancel,
    Ignore,
}

#[derive(Clone, Copy)]
pub(crate) enum OnBusy {
    Error,
    Skip,
}

#[derive(Clone, Copy)]
pub(crate) enum OnError {
    Hold,
    Release,
}

const VALID: &str = "valid arguments are `key`, `ttl`, `wait`, `client`, `on_lost`, `on_busy`, \
                     `at_least`, `at_most`, `on_error` and `crate`";

/// The shortest lease, as the runtime's `distlock::MIN_TTL`.
const MIN_LEASE: Duration = Duration::from_millis(100);
/// The longest lease or hold, as the runtime's `distlock::MAX_TTL`.
const MAX_LEASE: Duration = Duration::from_secs(30 * 24 * 3600);

mod kw {
    syn::custom_keyword!(key);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(wait);
    syn::custom_keyword!(client);
    syn::custom_keyword!(on_lost);
    syn::custom_keyword!(on_busy);
    syn::custom_keyword!(at_least);
    syn::custom_keyword!(at_most);
    syn::custom_keyword!(on_error);
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args {
            key: None,
            ttl: None,
            wait: None,
            client: None,
            on_lost: None,
            on_busy: None,
            at_least: None,
            at_most: None,
            on_error: None,
            krate: None,
            errors: None,
            seen: Vec::new(),
        };
        // Where each duration and choice was written, for the checks that involve two.
        let mut at_least: Option<LitStr> = None;
        let mut at_most: Option<LitStr> = None;
        let mut on_error: Option<Span> = None;
        let mut each = || -> syn::Result<()> {
            while !input.is_empty() {
                let lookahead = input.lookahead1();
                if lookahead.peek(kw::key) {
                    if let Some(lit) = args.value::<kw::key, LitStr>(input, "key")? {
                        args.key = Some(lit);
                    }
                } else if lookahead.peek(kw::ttl) {
                    if let Some(lit) = args.value::<kw::ttl, LitStr>(input, "ttl")? {
                        args.ttl = args.check(lease(&lit, "ttl", "a lock's `ttl`", "10s"));
                    }
                } else if lookahead.peek(kw::wait) {
                    if let Some(lit) = args.value::<kw::wait, LitStr>(input, "wait")? {
                        args.wait = args.check(duration(&lit));
                    }
                } else if lookahead.peek(kw::client) {
                    if let Some(expr) = args.value::<kw::client, Expr>(input, "client")? {
                        args.client = Some(expr);
                    }
                } else if lookahead.peek(kw::on_lost) {
                    if let Some(lit) = args.value::<kw::on_lost, LitStr>(input, "on_lost")? {
                        args.on_lost = args.check(choice(
                            &lit,
                            "on_lost",
                            &[
                                (
                                    "cancel",
                                    OnLost::Cancel,
                                    "drop the body when the lease is lost, the default",
                                ),
                                ("ignore", OnLost::Ignore, "let the body finish"),
                            ],
                        ));
                    }
                } else if lookahead.peek(kw::on_busy) {
                    if let Some(lit) = args.value::<kw::on_busy, LitStr>(input, "on_busy")? {
                        args.on_busy = args.check(choice(
                            &lit,
                            "on_busy",
                            &[
                                (
                                    "error",
                                    OnBusy::Error,
                                    "return `LockError::Busy`, the default",
                                ),
                                (
                                    "skip",
                                    OnBusy::Skip,
                                    "return `Ok(None)` without running the body",
                                ),
                            ],
                        ));
                    }
                } else if lookahead.peek(kw::at_least) {
                    if let Some(lit) = args.value::<kw::at_least, LitStr>(input, "at_least")? {
                        args.at_least = args.check(min_hold(&lit));
                        at_least = Some(lit);
                    }
                } else if lookahead.peek(kw::at_most) {
                    if let Some(lit) = args.value::<kw::at_most, LitStr>(input, "at_most")? {
                        args.at_most = args.check(lease(&lit, "at_most", "`at_most`", "10m"));
                        at_most = Some(lit);
                    }
                } else if lookahead.peek(kw::on_error) {
                    if let Some((keyword, lit)) =
                        args.keyword_value::<kw::on_error, LitStr>(input, "on_error")?
                    {
                        args.on_error = args.check(choice(
                            &lit,
                            "on_error",
                            &[
                                (
                                    "hold",
                                    OnError::Hold,
                                    "keep the lock for the rest of `at_least`, the default",
                                ),
                                (
                                    "release",
                                    OnError::Release,
                                    "release at once, so that another instance may retry",
                                ),
                            ],
                        ));
                        on_error = Some(keyword);
                    }
                } else if lookahead.peek(Token![crate]) {
                    if let Some(path) = args.value::<Token![crate], CratePath>(input, "crate")? {
                        args.krate = Some(path.0);
                    }
                } else if input.peek(Ident) {
                    let unknown: Ident = input.parse()?;
                    return Err(syn::Error::new(
                        unknown.span(),
                        format!("unknown argument `{unknown}`: {VALID}"),
                    ));
                } else {
                    return Err(lookahead.error());
                }
                if input.is_empty() {
                    break;
                }
                input.parse::<Token![,]>()?;
            }
            Ok(())
        };
        if let Err(syntax) = each() {
            // What was wrong before the syntax error is reported with it.
            args.error(syntax);
            return Err(args.errors.take().expect("just recorded"));
        }
        if let (Some(least), Some(most), Some(lit), Some(most_lit)) =
            (args.at_least, args.at_most, &at_least, &at_most)
            && least > most
        {
            args.error(syn::Error::new(
                lit.span(),
                format!(
                    "`at_least = {:?}` is longer than `at_most = {:?}`: the lock cannot be held \
                     at least {} and at most {}; shorten `at_least` or lengthen `at_most`",
                    lit.value(),
                    most_lit.value(),
                    lit.value(),
                    most_lit.value(),
                ),
            ));
        }
        if let Some(keyword) = on_error
            && at_least.is_none()
        {
            args.error(syn::Error::new(
                keyword,
                "`on_error` decides what happens to the `at_least` hold when the body fails, \
                 and there is no `at_least`: without it the lock is always released when the \
                 body ends; add e.g. `at_least = \"30s\"` or remove `on_error`",
            ));
        }
        Ok(args)
    }
}

impl Args {
    /// Parses `kw = value`; a second occurrence of `kw` is reported (and its value dropped).
    fn value<K: Parse + syn::spanned::Spanned, V: Parse>(
        &mut self,
        input: ParseStream<'_>,
        name: &'static str,
    ) -> syn::Result<Option<V>> {
        Ok(self
            .keyword_value::<K, V>(input, name)?
            .map(|(_, value)| value))
    }

    /// As [`Self::value`], with the keyword's span.
    fn keyword_value<K: Parse + syn::spanned::Spanned, V: Parse>(
        &mut self,
        input: ParseStream<'_>,
        name: &'static str,
    ) -> syn::Result<Option<(Span, V)>> {
        let kw: K = input.parse()?;
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        if self.seen.contains(&name) {
            self.error(syn::Error::new(
                kw.span(),
                format!("duplicate argument `{name}`: give each argument once"),
            ));
            return Ok(None);
        }
        self.seen.push(name);
        Ok(Some((kw.span(), value)))
    }

    fn error(&mut self, error: syn::Error) {
        match &mut self.errors {
            Some(all) => all.combine(error),
            None => self.errors = Some(error),
        }
    }

    /// The value, or `None` with its error recorded.
    fn check<T>(&mut self, value: syn::Result<T>) -> Option<T> {
        value.map_err(|e| self.error(e)).ok()
    }
}

/// `crate = some::path` or `crate = "some::path"`.
struct CratePath(Path);

impl Parse for CratePath {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(LitStr) {
            let lit: LitStr = input.parse()?;
            return lit.parse().map(CratePath);
        }
        Path::parse_mod_style(input).map(CratePath)
    }
}

fn duration(lit: &LitStr) -> syn::Result<Duration> {
    humantime::parse_duration(&lit.value()).map_err(|e| {
        syn::Error::new(
            lit.span(),
            format!(
                "invalid duration {:?}: {e}; write it like \"500ms\", \"10s\" or \"1m30s\"",
                lit.value()
            ),
        )
    })
}

/// A lease-like duration (`ttl`, `at_most`): from 100ms to 30 days.
fn lease(lit: &LitStr, name: &str, what: &str, example: &str) -> syn::Result<Duration> {
    let value = duration(lit)?;
    if value < MIN_LEASE {
        return Err(syn::Error::new(
            lit.span(),
            format!("{what} must be at least 100ms, e.g. `{name} = \"{example}\"`"),
        ));
    }
    if value > MAX_LEASE {
        return Err(syn::Error::new(
            lit.span(),
            format!("{what} must be at most 30 days"),
        ));
    }
    Ok(value)
}

/// `at_least`: more than zero, at most 30 days.
fn min_hold(lit: &LitStr) -> syn::Result<Duration> {
    let value = duration(lit)?;
    if value.is_zero() {
        return Err(syn::Error::new(
            lit.span(),
            "`at_least` of zero holds nothing after the body: remove it, or give the time the \
             lock stays held after acquiring, e.g. `at_least = \"30s\"`",
        ));
    }
    if value > MAX_LEASE {
        return Err(syn::Error::new(
            lit.span(),
            "`at_least` must be at most 30 days",
        ));
    }
    Ok(value)
}

/// One of the listed `(value, choice, meaning)`s.
fn choice<T: Copy>(lit: &LitStr, name: &str, choices: &[(&str, T, &str)]) -> syn::Result<T> {
    let value = lit.value();
    if let Some((_, choice, _)) = choices.iter().find(|(v, _, _)| *v == value) {
        return Ok(*choice);
    }
    let listed: Vec<String> = choices
        .iter()
        .map(|(v, _, meaning)| format!("\"{v}\" ({meaning})"))
        .collect();
    Err(syn::Error::new(
        lit.span(),
        format!(
            "unknown `{name}` value `{value}`: expected {}",
            listed.join(" or ")
        ),
    ))
}
