//! Parsing the attribute's arguments: `key = "..", ttl = "..", wait = "..", client = <expr>,
//! on_lost = "cancel" | "ignore", crate = <path>`.

use std::time::Duration;

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, LitStr, Path, Token};

/// The arguments, as written.
pub(crate) struct Args {
    pub(crate) key: Option<LitStr>,
    pub(crate) ttl: Option<(Duration, Span)>,
    pub(crate) wait: Option<(Duration, Span)>,
    pub(crate) client: Option<Expr>,
    pub(crate) on_lost: Option<OnLost>,
    pub(crate) krate: Option<Path>,
}

#[derive(Clone, Copy)]
pub(crate) enum OnLost {
    Cancel,
    Ignore,
}

const VALID: &str = "valid arguments are `key`, `ttl`, `wait`, `client`, `on_lost` and `crate`";

mod kw {
    syn::custom_keyword!(key);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(wait);
    syn::custom_keyword!(client);
    syn::custom_keyword!(on_lost);
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args {
            key: None,
            ttl: None,
            wait: None,
            client: None,
            on_lost: None,
            krate: None,
        };
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::key) {
                let value = value::<kw::key, LitStr>(input, &args.key, "key")?;
                args.key = Some(value);
            } else if lookahead.peek(kw::ttl) {
                let lit = value::<kw::ttl, LitStr>(input, &args.ttl, "ttl")?;
                let ttl = duration(&lit)?;
                if ttl < Duration::from_millis(100) {
                    return Err(syn::Error::new(
                        lit.span(),
                        "a lock's `ttl` must be at least 100ms, e.g. `ttl = \"10s\"`",
                    ));
                }
                args.ttl = Some((ttl, lit.span()));
            } else if lookahead.peek(kw::wait) {
                let lit = value::<kw::wait, LitStr>(input, &args.wait, "wait")?;
                args.wait = Some((duration(&lit)?, lit.span()));
            } else if lookahead.peek(kw::client) {
                args.client = Some(value::<kw::client, Expr>(input, &args.client, "client")?);
            } else if lookahead.peek(kw::on_lost) {
                let lit = value::<kw::on_lost, LitStr>(input, &args.on_lost, "on_lost")?;
                args.on_lost = Some(match lit.value().as_str() {
                    "cancel" => OnLost::Cancel,
                    "ignore" => OnLost::Ignore,
                    other => {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!(
                                "unknown `on_lost` value `{other}`: expected \"cancel\" (drop the \
                                 body when the lease is lost, the default) or \"ignore\""
                            ),
                        ));
                    }
                });
            } else if lookahead.peek(Token![crate]) {
                args.krate =
                    Some(value::<Token![crate], CratePath>(input, &args.krate, "crate")?.0);
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
        Ok(args)
    }
}

/// Parses `kw = value`, refusing a second occurrence of `kw`.
fn value<K: Parse + syn::spanned::Spanned, V: Parse>(
    input: ParseStream<'_>,
    seen: &Option<impl Sized>,
    name: &str,
) -> syn::Result<V> {
    let kw: K = input.parse()?;
    if seen.is_some() {
        return Err(syn::Error::new(
            kw.span(),
            format!("duplicate argument `{name}`: give each argument once"),
        ));
    }
    input.parse::<Token![=]>()?;
    input.parse()
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
