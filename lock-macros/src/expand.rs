//! Generating the guarded fn.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{
    AttrStyle, Attribute, Block, Expr, ExprAsync, FnArg, GenericArgument, Ident, ItemFn, LitStr,
    Pat, PathArguments, ReturnType, Signature, Stmt, Type, TypeParamBound, Visibility,
};

use crate::args::{Args, OnBusy, OnError, OnLost};
use crate::template::{self, Segment};

/// The entry point: on any error, the original item is emitted unchanged along with the
/// errors, so the rest of the crate (and the IDE) keeps working.
pub(crate) fn distributed_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    let func = match Func::parse(item.clone()) {
        Ok(func) => func,
        Err(err) => {
            let err = err.map(syn::Error::into_compile_error);
            return quote!(#item #err);
        }
    };
    match expand(args, &func) {
        Ok(tokens) => tokens,
        Err(err) => {
            let err = err.into_compile_error();
            quote!(#item #err)
        }
    }
}

/// The annotated fn, as far as it parses.
struct Func {
    /// The outer attributes (docs included).
    attrs: Vec<Attribute>,
    /// The body's inner attributes (`#![allow(..)]`), if the body parsed.
    inner_attrs: Vec<Attribute>,
    vis: Visibility,
    sig: Signature,
    body: Body,
}

enum Body {
    /// The statements, in the braces they were written in.
    Parsed(Block),
    /// A body that does not parse (the user is typing): its tokens, passed through as they
    /// are, so that rustc reports the syntax error where it is and nothing else.
    Unparsed(Group),
}

impl Func {
    /// `Err(None)`: an item that starts like a fn but does not parse as one (a signature
    /// being typed): rustc parsed the item before calling the macro and reports the syntax
    /// error itself, so the item passes through unchanged and no second error is added.
    fn parse(item: TokenStream) -> Result<Self, Option<syn::Error>> {
        if let Ok(ItemFn {
            attrs,
            vis,
            sig,
            block,
            ..
        }) = syn::parse2::<ItemFn>(item.clone())
        {
            let (inner_attrs, attrs) = attrs
                .into_iter()
                .partition(|attr| matches!(attr.style, AttrStyle::Inner(_)));
            return Ok(Func {
                attrs,
                inner_attrs,
                vis,
                sig,
                body: Body::Parsed(*block),
            });
        }
        let unparsed_body = |input: ParseStream<'_>| -> syn::Result<Func> {
            let attrs = input.call(Attribute::parse_outer)?;
            let vis: Visibility = input.parse()?;
            let sig: Signature = input.parse()?;
            let body: Group = input.parse()?;
            if body.delimiter() != Delimiter::Brace {
                return Err(syn::Error::new(body.span(), "expected the fn's body"));
            }
            Ok(Func {
                attrs,
                inner_attrs: Vec::new(),
                vis,
                sig,
                body: Body::Unparsed(body),
            })
        };
        if let Ok(func) = unparsed_body.parse2(item.clone()) {
            return Ok(func);
        }
        let fn_token = item
            .into_iter()
            .any(|tt| matches!(&tt, TokenTree::Ident(ident) if ident == "fn"));
        if fn_token {
            Err(None)
        } else {
            Err(Some(syn::Error::new(
                Span::call_site(),
                "#[distributed_lock] goes on an `async fn`",
            )))
        }
    }
}

fn expand(args: TokenStream, func: &Func) -> syn::Result<TokenStream> {
    let mut args = syn::parse2::<Args>(args)?;
    let mut errors = args.errors.take();
    let mut push = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };

    let shape = Shape::of(func);
    if let Shape::NotAsync = shape {
        push(syn::Error::new(
            func.sig.fn_token.span(),
            "#[distributed_lock] goes on an `async fn`: a lock is held across awaits, \
             so the fn must be async",
        ));
    }
    if let (Shape::Async, ReturnType::Default) = (&shape, &func.sig.output) {
        push(syn::Error::new(
            func.sig.ident.span(),
            "a #[distributed_lock] fn must return `Result<_, E>` where \
             `E: From<distlock::LockError>`: lock errors (busy, lost, backend down) are returned \
             through it; add e.g. `-> Result<(), distlock::LockError>`",
        ));
    }
    let params = parameters(&func.sig);
    let key = match &args.key {
        None => {
            push(syn::Error::new(
                Span::call_site(),
                "missing `key`: name the lock with a template, e.g. \
                 #[distributed_lock(key = \"order:{order.id}\")]",
            ));
            None
        }
        Some(lit) => match key_expr(lit, &params, &args) {
            Ok(expr) => Some(expr),
            Err(e) => {
                push(e);
                None
            }
        },
    };
    if let Some(errors) = errors {
        return Err(errors);
    }
    let (Some(key), Some(output)) = (key, shape.output(func)) else {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[distributed_lock] goes on an `async fn`",
        ));
    };

    let krate = crate_path(&args);
    let prelude = prelude(&args, &key, &krate);
    // The body is handed over through `on_busy_error(..)` or `on_busy_skip(..)`, whose
    // bounds check the return type. That call is spanned over the return type (its path
    // starts where the type starts, its parentheses close where it ends): a return type that
    // is not a `Result` able to carry a `LockError`, or that cannot say "skipped", gets one
    // error, underlining it.
    let (first, last) = edges(output.to_token_stream());
    let check = Ident::new(
        match args.on_busy {
            Some(OnBusy::Skip) => "on_busy_skip",
            Some(OnBusy::Error) | None => "on_busy_error",
        },
        last,
    );
    let module = respan(quote!(#krate::__private::), first);
    let guarded = |body: TokenStream| {
        let mut checked = Group::new(Delimiter::Parenthesis, body);
        checked.set_span(last);
        quote! {
            #krate::__private::locked(
                __distlock_client,
                __distlock_key,
                __distlock_options,
                #module #check #checked,
            )
            .await
        }
    };

    let Func {
        attrs,
        inner_attrs,
        vis,
        sig,
        body,
    } = func;
    let body = match (shape, body) {
        (Shape::Async, Body::Parsed(block)) => {
            let hint = output_hint(&output);
            let mut inner = TokenStream::new();
            block.brace_token.surround(&mut inner, |tokens| {
                hint.to_tokens(tokens);
                for stmt in &block.stmts {
                    stmt.to_tokens(tokens);
                }
            });
            let call = guarded(quote!(async move #inner));
            quote! {
                {
                    #(#inner_attrs)*
                    #prelude
                    #call
                }
            }
        }
        (Shape::Async, Body::Unparsed(group)) => {
            let call = guarded(quote!(async move #group));
            quote! {
                {
                    #prelude
                    #call
                }
            }
        }
        (Shape::AsyncTrait(inner), Body::Parsed(block)) => {
            // `#[async_trait]` expanded first: wrap the body of its `Box::pin(async move {..})`
            // (which starts with its own hint of the output type).
            let inner_block = &inner.block;
            let call = guarded(quote!(async move #inner_block));
            let mut block = block.clone();
            if let Some(Stmt::Expr(Expr::Call(pin), None)) = block.stmts.last_mut() {
                pin.args[0] = syn::parse_quote!(async move { #prelude #call });
            }
            let mut tokens = TokenStream::new();
            block.brace_token.surround(&mut tokens, |tokens| {
                for attr in inner_attrs {
                    attr.to_tokens(tokens);
                }
                for stmt in &block.stmts {
                    stmt.to_tokens(tokens);
                }
            });
            tokens
        }
        (Shape::AsyncTrait(_), Body::Unparsed(_)) | (Shape::NotAsync, _) => {
            unreachable!("refused above")
        }
    };
    Ok(quote! {
        #(#attrs)*
        #vis #sig
        #body
    })
}

/// The statements before the guarded call: the key, the client, the options.
fn prelude(args: &Args, key: &TokenStream, krate: &TokenStream) -> TokenStream {
    let client = match &args.client {
        Some(expr) => quote::quote_spanned! {expr.span()=>
            ::core::result::Result::Ok(
                #krate::__private::IntoLockClient::into_lock_client(&(#expr))
            )
        },
        None => quote!(#krate::__private::default_client()),
    };
    let duration = |d: std::time::Duration| {
        let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
        quote!(#krate::__private::StdDuration::new(#secs, #nanos))
    };
    let some = |d: std::time::Duration| {
        let d = duration(d);
        quote!(::core::option::Option::Some(#d))
    };
    // Only what the attribute sets; the rest stays at the runtime's defaults.
    let mut fields = Vec::new();
    if let Some(ttl) = args.ttl {
        let ttl = some(ttl);
        fields.push(quote!(ttl: #ttl,));
    }
    if let Some(wait) = args.wait {
        let wait = duration(wait);
        fields.push(quote!(wait: #wait,));
    }
    if let Some(on_lost) = args.on_lost {
        let on_lost = match on_lost {
            OnLost::Cancel => quote!(Cancel),
            OnLost::Ignore => quote!(Ignore),
        };
        fields.push(quote!(on_lost: #krate::__private::OnLost::#on_lost,));
    }
    if let Some(at_least) = args.at_least {
        let at_least = some(at_least);
        fields.push(quote!(at_least: #at_least,));
    }
    if let Some(at_most) = args.at_most {
        let at_most = some(at_most);
        fields.push(quote!(at_most: #at_most,));
    }
    if let Some(on_error) = args.on_error {
        let on_error = match on_error {
            OnError::Hold => quote!(Hold),
            OnError::Release => quote!(Release),
        };
        fields.push(quote!(on_error: #krate::__private::OnError::#on_error,));
    }
    quote! {
        let __distlock_key: ::std::string::String = #key;
        let __distlock_client = #client;
        #[allow(clippy::needless_update)]
        let __distlock_options = #krate::__private::Options {
            #(#fields)*
            ..#krate::__private::Options::DEFAULT
        };
    }
}

/// A statement that never runs but fixes the type the body's async block returns to the
/// fn's return type before the body is checked, so that `?` and `return` in the body convert
/// to it as in the fn itself. `impl Trait` in the return type becomes `_` (inferred).
fn output_hint(output: &Type) -> TokenStream {
    let erased = erase_impl_trait(output);
    if let Type::Infer(_) = erased {
        return TokenStream::new();
    }
    // Its type is the user's (so a mismatch in the body is explained by the return type), so
    // lints would take the statement for user code: it is generated, and allows them all.
    quote! {
        #[allow(
            unreachable_code,
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            clippy::restriction
        )]
        if false {
            let __distlock_output: #erased = loop {};
            return __distlock_output;
        }
    }
}

/// `ty` with every `impl Trait` in it replaced by `_`.
fn erase_impl_trait(ty: &Type) -> Type {
    let mut ty = ty.clone();
    erase(&mut ty);
    ty
}

fn erase(ty: &mut Type) {
    match ty {
        Type::ImplTrait(impl_trait) => {
            let span = impl_trait.impl_token.span;
            *ty = syn::parse_quote_spanned!(span=> _);
        }
        Type::Array(array) => erase(&mut array.elem),
        Type::Group(group) => erase(&mut group.elem),
        Type::Paren(paren) => erase(&mut paren.elem),
        Type::Ptr(ptr) => erase(&mut ptr.elem),
        Type::Reference(reference) => erase(&mut reference.elem),
        Type::Slice(slice) => erase(&mut slice.elem),
        Type::Tuple(tuple) => tuple.elems.iter_mut().for_each(erase),
        Type::Path(path) => {
            if let Some(qself) = &mut path.qself {
                erase(&mut qself.ty);
            }
            for segment in &mut path.path.segments {
                if let PathArguments::AngleBracketed(args) = &mut segment.arguments {
                    for arg in &mut args.args {
                        match arg {
                            GenericArgument::Type(ty) => erase(ty),
                            GenericArgument::AssocType(assoc) => erase(&mut assoc.ty),
                            _ => {}
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// The spans of the first and the last token.
fn edges(tokens: TokenStream) -> (Span, Span) {
    let mut tokens = tokens.into_iter();
    let Some(first) = tokens.next() else {
        return (Span::call_site(), Span::call_site());
    };
    let last = tokens.last().unwrap_or_else(|| first.clone());
    let first = match first {
        TokenTree::Group(group) => group.span_open(),
        tt => tt.span(),
    };
    let last = match last {
        TokenTree::Group(group) => group.span_close(),
        tt => tt.span(),
    };
    (first, last)
}

/// `tokens`, every one of them with `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Group(group) => {
                let mut respanned = Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                TokenTree::Group(respanned)
            }
            mut tt => {
                tt.set_span(span);
                tt
            }
        })
        .collect()
}

/// What the fn looks like.
enum Shape<'a> {
    /// `async fn`.
    Async,
    /// A method already rewritten by `#[async_trait]`: `fn .. -> Pin<Box<dyn Future<Output =
    /// R> + ..>> { Box::pin(async move { .. }) }`.
    AsyncTrait(&'a ExprAsync),
    NotAsync,
}

impl<'a> Shape<'a> {
    fn of(func: &'a Func) -> Self {
        if func.sig.asyncness.is_some() {
            return Shape::Async;
        }
        if let Body::Parsed(block) = &func.body
            && let Some(Stmt::Expr(Expr::Call(call), None)) = block.stmts.last()
            && let Expr::Path(path) = &*call.func
            && path.path.segments.last().is_some_and(|s| s.ident == "pin")
            && call.args.len() == 1
            && let Some(Expr::Async(inner)) = call.args.first()
            && future_output(&func.sig.output).is_some()
        {
            return Shape::AsyncTrait(inner);
        }
        Shape::NotAsync
    }

    /// The type the guarded body produces.
    fn output(&self, func: &Func) -> Option<Type> {
        match self {
            Shape::Async => match &func.sig.output {
                ReturnType::Default => None,
                ReturnType::Type(_, ty) => Some((**ty).clone()),
            },
            Shape::AsyncTrait(_) => future_output(&func.sig.output),
            Shape::NotAsync => None,
        }
    }
}

/// `R` in `-> Pin<Box<dyn Future<Output = R> + ..>>`.
fn future_output(output: &ReturnType) -> Option<Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let mut ty: &Type = ty;
    // Pin<Box<dyn Future<..>>>: step through the single generic argument of Pin and Box.
    for _ in 0..2 {
        let Type::Path(path) = ty else { return None };
        let PathArguments::AngleBracketed(args) = &path.path.segments.last()?.arguments else {
            return None;
        };
        let Some(GenericArgument::Type(inner)) = args.args.first() else {
            return None;
        };
        ty = inner;
    }
    let Type::TraitObject(object) = ty else {
        return None;
    };
    object.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(t) = bound else {
            return None;
        };
        let last = t.path.segments.last()?;
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(assoc.ty.clone()),
            _ => None,
        })
    })
}

/// The names a key placeholder may start with: `self` and the named parameters.
fn parameters(sig: &Signature) -> Vec<String> {
    sig.inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Receiver(_) => Some("self".to_owned()),
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(ident) => Some(ident.ident.to_string()),
                _ => None,
            },
        })
        .collect()
}

/// The expression that builds the key: literal text pushed as is, each placeholder's value
/// formatted with `Display`. Placeholder expressions carry the span of the key literal, so
/// rustc's own errors (an unknown field, a value that is not `Display`) point at it.
fn key_expr(lit: &LitStr, params: &[String], args: &Args) -> syn::Result<TokenStream> {
    let segments = template::parse(&lit.value()).map_err(|msg| syn::Error::new(lit.span(), msg))?;
    let krate = crate_path(args);
    let mut pushes = Vec::new();
    for segment in segments {
        match segment {
            Segment::Text(text) => pushes.push(quote!(__distlock_key.push_str(#text);)),
            Segment::Path(path) => {
                let root = &path[0];
                if !params.iter().any(|p| p == root) {
                    let listed = if params.is_empty() {
                        "the fn has no parameters".to_owned()
                    } else {
                        let names: Vec<String> = params.iter().map(|p| format!("`{p}`")).collect();
                        format!("the parameters are {}", names.join(", "))
                    };
                    return Err(syn::Error::new(
                        lit.span(),
                        format!(
                            "unknown parameter `{root}` in key placeholder `{{{}}}`: {listed}",
                            path.join(".")
                        ),
                    ));
                }
                let expr: Expr = LitStr::new(&path.join("."), lit.span()).parse()?;
                // A type named after the placeholder (`order·id`), so that a value that is
                // not `Display` gets an error naming the placeholder it came from.
                let marker = Ident::new(&path.join("\u{b7}"), lit.span());
                pushes.push(quote::quote_spanned! {lit.span()=>
                    {
                        #[allow(dead_code, non_camel_case_types)]
                        struct #marker {}
                        #krate::__private::push_key_part::<#marker, _>(
                            &mut __distlock_key,
                            &(#expr),
                        );
                    }
                });
            }
        }
    }
    Ok(quote! {{
        let mut __distlock_key = ::std::string::String::new();
        #(#pushes)*
        __distlock_key
    }})
}

fn crate_path(args: &Args) -> TokenStream {
    match &args.krate {
        Some(path) => quote!(#path),
        None => quote!(::distlock),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ty` with `impl Trait` erased, and what it should be, both printed.
    fn erased(ty: Type, expected: Type) -> (String, String) {
        (
            erase_impl_trait(&ty).to_token_stream().to_string(),
            expected.to_token_stream().to_string(),
        )
    }

    #[test]
    fn impl_trait_is_erased_wherever_it_is() {
        let (got, want) = erased(
            syn::parse_quote!(Result<impl Display, E>),
            syn::parse_quote!(Result<_, E>),
        );
        assert_eq!(got, want);
        let (got, want) = erased(
            syn::parse_quote!(Result<(Option<impl Display>, &'a [impl Debug]), Box<dyn Error>>),
            syn::parse_quote!(Result<(Option<_>, &'a [_]), Box<dyn Error>>),
        );
        assert_eq!(got, want);
        let (got, want) = erased(
            syn::parse_quote!(Result<Vec<impl Iterator<Item = impl Debug>>, E>),
            syn::parse_quote!(Result<Vec<_>, E>),
        );
        assert_eq!(got, want);
        let (got, want) = erased(
            syn::parse_quote!(Result<Box<dyn Fn() -> u8>, E>),
            syn::parse_quote!(Result<Box<dyn Fn() -> u8>, E>),
        );
        assert_eq!(got, want);
    }
}
