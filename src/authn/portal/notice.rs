//! Portal pages of single sign-on: the provider buttons on the login page, a message page for
//! refused or unavailable sign-ons, and the hop that finishes a sign-on.
//!
//! The hop exists because the identity provider's redirect back to Wardgate is a cross-site
//! navigation: a `SameSite=Strict` session cookie set on it would not be sent on the redirect
//! that follows. A page that moves on by itself (meta refresh, no script, so the strict CSP
//! holds) makes the next navigation same-site, and the cookie goes along.

use http::{Response, StatusCode};

use super::pages::{escape, page};
use crate::app::App;
use crate::body::Body;

/// One "Sign in with …" link per configured provider, carrying the return path.
pub(crate) fn provider_links(app: &App, rd: &str) -> String {
    let links: String = app
        .oidc
        .iter()
        .map(|provider| {
            let query = serde_urlencoded::to_string([("rd", rd)]).unwrap_or_default();
            format!(
                "<a class=\"sso\" id=\"sso-{name}\" href=\"/.wardgate/oidc/{name}/start?{query}\">Sign in with {label}</a>\n",
                name = escape(&provider.config.name),
                query = escape(&query),
                label = escape(&provider.config.display_name),
            )
        })
        .collect();
    if links.is_empty() {
        return links;
    }
    format!(
        "<div class=\"sso-providers\">\n<p>Staff of a connected organization:</p>\n{links}</div>\n"
    )
}

/// A page with a title and one message (refused or unavailable sign-on).
pub(crate) fn message_page(status: StatusCode, title: &str, message: &str) -> Response<Body> {
    let content = format!(
        "<p class=\"error\" role=\"alert\">{}</p>\n<p><a href=\"/.wardgate/login\">Back to sign-in</a></p>",
        escape(message)
    );
    page(status, title, &content)
}

/// After Wardgate's own logout of a single-sign-on session: a page that moves on to the
/// provider's logout (RP-initiated logout) at once.
pub(crate) fn leave_for(provider_logout: &str) -> Response<Body> {
    let content = format!(
        "<meta http-equiv=\"refresh\" content=\"0;url={url}\">\n<p>Signed out of Wardgate. <a id=\"provider-logout\" href=\"{url}\">Sign out of your organization too</a></p>",
        url = escape(provider_logout)
    );
    page(StatusCode::OK, "Signing out", &content)
}

/// A page that moves on to `path` (same origin) at once.
pub(crate) fn continue_to(app: &App, path: &str) -> Response<Body> {
    let target = format!("{}{}", app.config.listen.public_url, path);
    let content = format!(
        "<meta http-equiv=\"refresh\" content=\"0;url={url}\">\n<p>Signed in. <a id=\"continue\" href=\"{url}\">Continue</a></p>",
        url = escape(&target)
    );
    page(StatusCode::OK, "Signing in", &content)
}
