//! The sign-in session of productpage: Bookinfo's `/login` form puts the user name in
//! a cookie, and productpage sends it as `end-user` on its calls to details and
//! reviews (what Istio's per-user routing samples match on). There is no password
//! check, as in Istio's Bookinfo: any name signs in.

use http::HeaderMap;

/// The session cookie's name (Istio's first productpage used the same cookie).
pub const COOKIE: &str = "user";
/// Longer names are refused: the name travels in a header on every call.
pub const MAX_USER_LEN: usize = 64;

/// The signed-in user named by the request's session cookie, if any.
pub fn user(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| valid_user(&decode(value)))
}

/// The `username` field of the login form (`application/x-www-form-urlencoded`).
pub fn form_user(body: &[u8]) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "username")
        .and_then(|(_, v)| valid_user(v.trim()))
}

/// A name usable as a header value: not empty, no control characters, bounded.
fn valid_user(name: &str) -> Option<String> {
    let ok = !name.is_empty() && name.len() <= MAX_USER_LEN && !name.chars().any(char::is_control);
    ok.then(|| name.to_owned())
}

fn decode(value: &str) -> String {
    form_urlencoded::parse(format!("u={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// `Set-Cookie` that starts a session for `user` (percent-encoded: names may hold spaces).
pub fn sign_in_cookie(user: &str) -> String {
    let value: String = form_urlencoded::byte_serialize(user.as_bytes()).collect();
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax")
}

/// `Set-Cookie` that ends the session.
pub fn sign_out_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// Where to go after signing in or out: back to the page the form was on (like
/// Istio's `redirect(request.referrer)`), but only to a path on this site, never to
/// another host named in the `Referer`.
pub fn back_to(headers: &HeaderMap) -> String {
    let referer = headers
        .get(http::header::REFERER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let path = match referer.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => referer,
    };
    let path = path.split('#').next().unwrap_or("");
    if path.starts_with('/') && !path.starts_with("//") && !path.starts_with("/login") {
        path.to_owned()
    } else {
        "/productpage".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_cookie_round_trips_the_user_name() {
        let set = sign_in_cookie("jason q");
        let pair = set.split(';').next().unwrap();
        assert_eq!(pair, "user=jason+q");
        assert_eq!(
            user(&headers(&[("cookie", &format!("a=b; {pair}"))])).as_deref(),
            Some("jason q")
        );
        assert_eq!(user(&headers(&[("cookie", "user=")])), None);
        assert_eq!(user(&headers(&[("cookie", "username=jason")])), None);
        assert!(sign_out_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn the_form_gives_the_user_name_and_refuses_unusable_ones() {
        assert_eq!(form_user(b"username=jason&passwd=x").as_deref(), Some("jason"));
        assert_eq!(form_user(b"passwd=x&username=Jo%C3%ABl+K").as_deref(), Some("Joël K"));
        assert_eq!(form_user(b"username=&passwd=x"), None);
        assert_eq!(form_user(b"username=a%0Ab"), None);
        assert_eq!(form_user(format!("username={}", "x".repeat(65)).as_bytes()), None);
    }

    #[test]
    fn redirects_stay_on_this_site() {
        let back = |r: &str| back_to(&headers(&[("referer", r)]));
        assert_eq!(back("http://127.0.0.1:9080/productpage"), "/productpage");
        assert_eq!(
            back("http://127.0.0.1:9080/productpage?u=normal#x"),
            "/productpage?u=normal"
        );
        assert_eq!(back("http://evil.example"), "/productpage");
        assert_eq!(back("//evil.example/x"), "/productpage");
        assert_eq!(back_to(&HeaderMap::new()), "/productpage");
    }
}
