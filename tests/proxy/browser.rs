//! The browser flows in real headless Chromium: login → TOTP → protected page → logout, and
//! first-login enrollment from the QR page.

use crate::support::auth::{add_user, code, login, next_code, secret_from_uri, PASSWORD};
use crate::support::browser::Browser;
use crate::support::{config, write_config, Backend, Wardgate};

#[tokio::test]
async fn login_totp_protected_page_and_logout_in_chromium() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    let nora = add_user(&path, "nora", &["--role", "clinician"], true);
    let proxy = Wardgate::start_in(dir, path);
    // Confirm the CLI-provisioned secret once through the API, so the browser sees the TOTP step.
    assert_eq!(
        login(&proxy, "nora", PASSWORD, &code(&nora)).await.status(),
        200
    );
    let browser = Browser::start().await;

    browser.goto(&proxy.url("/private/page?tab=notes")).await;
    let url = browser
        .wait_for_url(|u| u.contains("/.wardgate/login"))
        .await;
    assert!(
        url.contains("/.wardgate/login?rd=%2Fprivate%2Fpage%3Ftab%3Dnotes"),
        "{url}"
    );
    browser.screenshot("01-login").await;
    browser.type_into("#username", "nora").await;
    browser.type_into("#password", "wrong password!!").await;
    browser.click("#sign-in").await;
    browser.screenshot("01b-failed").await;
    assert!(
        browser.source().await.contains("Sign-in failed"),
        "no error shown: {}",
        browser.source().await
    );
    browser.type_into("#username", "nora").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("#sign-in").await;
    let url = browser
        .wait_for_url(|u| u.ends_with("/.wardgate/login/totp"))
        .await;
    assert!(url.ends_with("/.wardgate/login/totp"), "{url}");
    browser.screenshot("02-totp").await;
    browser.type_into("#code", &next_code(&nora)).await;
    browser.click("#verify").await;
    let url = browser.wait_for_url(|u| u.contains("/private/page")).await;
    assert_eq!(url, proxy.url("/private/page?tab=notes"));
    let page = browser.source().await;
    assert!(page.contains("/private/page?tab=notes"), "{page}");
    assert_eq!(backend.last().headers["x-wardgate-user"], "nora");

    browser.goto(&proxy.url("/.wardgate/")).await;
    assert_eq!(browser.text("#user").await, "nora");
    browser.screenshot("03-signed-in").await;
    browser.click("#sign-out").await;
    browser
        .wait_for_url(|u| u.ends_with("/.wardgate/login"))
        .await;
    browser.goto(&proxy.url("/private/page")).await;
    let url = browser
        .wait_for_url(|u| u.contains("/.wardgate/login"))
        .await;
    assert!(
        url.contains("/.wardgate/login?rd="),
        "still signed in after logout: {url}"
    );
    assert_eq!(backend.seen().len(), 1);
}

#[tokio::test]
async fn first_login_enrolls_the_authenticator_from_the_qr_page() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    add_user(&path, "omar", &[], false);
    let proxy = Wardgate::start_in(dir, path);
    let browser = Browser::start().await;

    browser
        .goto(&proxy.url("/.wardgate/login?rd=/private/welcome"))
        .await;
    browser.type_into("#username", "omar").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("#sign-in").await;
    let url = browser
        .wait_for_url(|u| u.ends_with("/.wardgate/enroll"))
        .await;
    assert!(url.ends_with("/.wardgate/enroll"), "{url}");
    let page = browser.source().await;
    assert!(page.contains("<svg"), "no QR code on the enrollment page");
    browser.screenshot("04-enroll").await;
    let secret = browser.text("#secret").await;
    let omar = secret_from_uri("omar", &format!("otpauth://totp/x?secret={secret}"));
    browser.type_into("#code", "000000").await;
    browser.click("#verify").await;
    assert!(browser.wait_for_text("Sign-in failed").await);
    browser.type_into("#code", &code(&omar)).await;
    browser.click("#verify").await;
    let url = browser
        .wait_for_url(|u| u.contains("/private/welcome"))
        .await;
    assert_eq!(url, proxy.url("/private/welcome"));
    assert_eq!(backend.last().headers["x-wardgate-user"], "omar");
}

#[tokio::test]
async fn stale_sessions_step_up_in_the_browser() {
    let backend = Backend::start().await;
    let extra = "\n[[routes]]\nname = \"export\"\npath = \"/export/**\"\nupstream = \"b\"\nmax_auth_age = \"2s\"\nallow = [{ authenticated = true }]\n";
    let (dir, path) = write_config(&config(backend.addr, extra));
    add_user(&path, "pia", &[], false);
    let proxy = Wardgate::start_in(dir, path);
    let browser = Browser::start().await;

    browser
        .goto(&proxy.url("/.wardgate/login?rd=/export/report"))
        .await;
    browser.type_into("#username", "pia").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("#sign-in").await;
    browser
        .wait_for_url(|u| u.ends_with("/.wardgate/enroll"))
        .await;
    let secret = browser.text("#secret").await;
    let pia = secret_from_uri("pia", &format!("otpauth://totp/x?secret={secret}"));
    browser.type_into("#code", &code(&pia)).await;
    browser.click("#verify").await;
    assert_eq!(
        browser.wait_for_url(|u| u.contains("/export/report")).await,
        proxy.url("/export/report")
    );

    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    browser.goto(&proxy.url("/export/report?page=2")).await;
    let url = browser
        .wait_for_url(|u| u.contains("/.wardgate/step-up"))
        .await;
    assert!(
        url.contains("/.wardgate/step-up?rd=%2Fexport%2Freport%3Fpage%3D2"),
        "{url}"
    );
    browser.screenshot("05-step-up").await;
    browser.type_into("#code", &next_code(&pia)).await;
    browser.click("#verify").await;
    assert_eq!(
        browser
            .wait_for_url(|u| u.contains("/export/report?page=2"))
            .await,
        proxy.url("/export/report?page=2")
    );
    assert_eq!(backend.last().path_and_query, "/export/report?page=2");
}
