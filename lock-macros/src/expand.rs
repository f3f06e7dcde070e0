//! Generating the guarded fn.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    Expr, ExprAsync, FnArg, GenericArgument, Ident, ItemFn, LitStr, Pat, PathArguments, ReturnType,
    Stmt, Type, TypeParamBound,
};

use crate::args::{Args, OnLost};
use crate::template::{self, Segment};

/// The entry point: on any error, the original fn is emitted along with the errors, so the
/// rest of the crate (and the IDE) keeps working.
pub(crate) fn distributed_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(_) => {
            let err = syn::Error::new(
                Span::call_site(),
                "#[distributed_lock] goes on an `async fn`",
            );
            return quote!(#item)
                .into_iter()
                .chain(err.to_compile_error())
                .collect();
        }
    };
    let args = syn::parse2::<Args>(args);
    match args.and_then(|args| expand(args, &func)) {
        Ok(tokens) => tokens,
        Err(err) => {
            let err = err.to_compile_error();
            quote!(#func #err)
        }
    }
}

fn expand(args: Args, func: &ItemFn) -> syn::Result<TokenStream> {
    let mut errors: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };

    let shape = Shape::of(func);
    if let Shape::NotAsync = shape {
        let span = func.sig.fn_token.span();
        push(syn::Error::new(
            span,
            "#[distributed_lock] goes on an `async fn`: a lock is held across awaits, \
             so the fn must be async",
        ));
    }
    let params = parameters(func);
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
    let client = match &args.client {
        Some(expr) => quote_spanned! {expr.span()=>
            ::core::result::Result::Ok(
                #krate::__private::IntoLockClient::into_lock_client(&(#expr))
            )
        },
        None => quote!(#krate::__private::default_client()),
    };
    let ttl = match args.ttl {
        Some((d, _)) => {
            let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
            quote!(::core::option::Option::Some(#krate::__private::StdDuration::new(#secs, #nanos)))
        }
        None => quote!(::core::option::Option::None),
    };
    let wait = {
        let d = args.wait.map(|(d, _)| d).unwrap_or_default();
        let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
        quote!(#krate::__private::StdDuration::new(#secs, #nanos))
    };
    let on_lost = match args.on_lost.unwrap_or(OnLost::Cancel) {
        OnLost::Cancel => quote!(#krate::__private::OnLost::Cancel),
        OnLost::Ignore => quote!(#krate::__private::OnLost::Ignore),
    };
    let output_span = output.span();
    let guarded = |body: TokenStream| {
        quote_spanned! {output_span=>
            #krate::__private::locked::<#output, _>(
                __distlock_client,
                __distlock_key,
                #ttl,
                #wait,
                #on_lost,
                #body,
            )
            .await
        }
    };
    let prelude = quote! {
        let __distlock_key: ::std::string::String = #key;
        let __distlock_client = #client;
    };

    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = func;
    let body = match shape {
        Shape::Async => {
            let call = guarded(quote!(async move #block));
            quote! {
                {
                    #prelude
                    #call
                }
            }
        }
        Shape::AsyncTrait(inner) => {
            // `#[async_trait]` expanded first: wrap the body of its `Box::pin(async move {..})`.
            let inner_block = &inner.block;
            let call = guarded(quote!(async move #inner_block));
            let mut block = (**block).clone();
            if let Some(Stmt::Expr(Expr::Call(pin), None)) = block.stmts.last_mut() {
                pin.args[0] = syn::parse_quote!(async move { #prelude #call });
            }
            block.into_token_stream()
        }
        Shape::NotAsync => block.into_token_stream(),
    };
    Ok(quote! {
        #(#attrs)*
        #vis #sig
        #body
    })
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
    fn of(func: &'a ItemFn) -> Self {
        if func.sig.asyncness.is_some() {
            return Shape::Async;
        }
        if let Some(Stmt::Expr(Expr::Call(call), None)) = func.block.stmts.last()
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
    fn output(&self, func: &ItemFn) -> Option<Type> {
        match self {
            Shape::Async => Some(match &func.sig.output {
                ReturnType::Default => syn::parse_quote!(()),
                ReturnType::Type(_, ty) => (**ty).clone(),
            }),
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
fn parameters(func: &ItemFn) -> Vec<String> {
    func.sig
        .inputs
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
                pushes.push(quote_spanned! {lit.span()=>
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
