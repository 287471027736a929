//! productpage's HTML: the layout and wording of Istio's Bookinfo page (navbar with
//! Sign in / sign out, the book, its details and reviews, the same error texts),
//! styled by our own `/static/bookinfo.css`, no script. Also names the versions that
//! served the page, which Istio's page does not, so a person sees routing change.

use serde_json::Value;

/// What productpage got from details and reviews for one page.
pub struct View<'a> {
    pub served_by: &'a str,
    pub user: Option<&'a str>,
    pub product: &'a Value,
    pub details: Result<Value, String>,
    /// The reviews version that answered and its JSON.
    pub reviews: Result<(String, Value), String>,
}

pub const DETAILS_ERROR_TITLE: &str = "Error fetching product details!";
pub const DETAILS_UNAVAILABLE: &str = "Sorry, product details are currently unavailable for this book.";
pub const REVIEWS_ERROR_TITLE: &str = "Error fetching product reviews!";
pub const REVIEWS_UNAVAILABLE: &str = "Sorry, product reviews are currently unavailable for this book.";
pub const RATINGS_API_UNAVAILABLE: &str = "Sorry, product ratings are currently unavailable for this book.";

pub fn render(v: &View) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1.0\">\
         <title>Simple Bookstore App</title><link rel=\"stylesheet\" href=\"static/bookinfo.css\"></head>\n\
         <body>{nav}{login}<main class=\"container\">{product}<div class=\"row\">{details}{reviews}</div></main>\
         <footer class=\"container\">productpage served by <b>{served}</b></footer></body></html>\n",
        nav = navbar(v.user),
        login = LOGIN_MODAL,
        product = product(v.product),
        details = details(&v.details),
        reviews = reviews(&v.reviews),
        served = escape(v.served_by),
    )
}

fn navbar(user: Option<&str>) -> String {
    let right = match user {
        Some(u) => format!(
            "<p class=\"navbar-text\" id=\"user\">{} ( <a href=\"logout\" id=\"sign-out\">sign out</a> )</p>",
            escape(u)
        ),
        None => "<a class=\"btn btn-default navbar-btn\" href=\"#login-modal\" id=\"sign-in\">Sign in</a>".into(),
    };
    format!(
        "<nav class=\"navbar\"><div class=\"container\"><a class=\"navbar-brand\" href=\"productpage\">BookInfo Sample</a>{right}</div></nav>\n"
    )
}

/// Opened by the Sign in link through CSS `:target`, so the page needs no script.
const LOGIN_MODAL: &str = "<div id=\"login-modal\" class=\"modal\" role=\"dialog\"><div class=\"modal-dialog\">\
    <div class=\"modal-header\"><a class=\"close\" href=\"#\">&times;</a><h4 class=\"modal-title\">Please sign in</h4></div>\
    <form method=\"post\" action=\"login\" name=\"login_form\">\
    <p><input type=\"text\" class=\"form-control\" name=\"username\" id=\"username\" placeholder=\"User Name\"></p>\
    <p><input type=\"password\" class=\"form-control\" name=\"passwd\" placeholder=\"Password\"></p>\
    <p><button type=\"submit\" class=\"btn btn-primary\" id=\"login-submit\">Sign in</button> \
    <a class=\"btn btn-default\" href=\"#\">Cancel</a></p></form></div></div>\n";

fn product(p: &Value) -> String {
    // descriptionHtml is our own constant (data::products), shown as HTML like Istio's page.
    format!(
        "<div class=\"row\"><div class=\"col-12\"><h3 class=\"text-center text-primary\">{}</h3><p>Summary: {}</p></div></div>",
        escape(p["title"].as_str().unwrap_or("")),
        p["descriptionHtml"].as_str().unwrap_or("")
    )
}

fn details(d: &Result<Value, String>) -> String {
    let body = match d {
        Ok(d) => {
            let row = |label: &str, key: &str| format!("<dt>{label}:</dt><dd>{}</dd>", plain(&d[key]));
            format!(
                "<h4 class=\"text-center text-primary\">Book Details</h4><dl>{}{}{}{}{}{}</dl>\
                 <p class=\"served-by\">Details served by: <b>{}</b></p>",
                row("Type", "type"),
                row("Pages", "pages"),
                row("Publisher", "publisher"),
                row("Language", "language"),
                row("ISBN-10", "ISBN-10"),
                row("ISBN-13", "ISBN-13"),
                plain(&d["servedBy"])
            )
        }
        Err(cause) => unavailable(DETAILS_ERROR_TITLE, DETAILS_UNAVAILABLE, cause),
    };
    format!("<section class=\"col-6 details\">{body}</section>")
}

fn reviews(r: &Result<(String, Value), String>) -> String {
    let body = match r {
        Ok((served_by, r)) => {
            let mut out = String::from("<h4 class=\"text-center text-primary\">Book Reviews</h4>");
            for review in r["reviews"].as_array().into_iter().flatten() {
                out.push_str(&one_review(review));
            }
            out.push_str(&format!(
                "<p class=\"served-by\" data-served-by=\"{0}\">Reviews served by: <b>{0}</b></p>",
                escape(served_by)
            ));
            out
        }
        Err(cause) => unavailable(REVIEWS_ERROR_TITLE, REVIEWS_UNAVAILABLE, cause),
    };
    format!("<section class=\"col-6 reviews\">{body}</section>")
}

fn one_review(review: &Value) -> String {
    let rating = &review["rating"];
    let stars = match (
        rating["stars"].as_u64(),
        rating["color"].as_str(),
        rating["error"].as_str(),
    ) {
        (Some(n), Some(c), _) => stars(n.min(5) as usize, c),
        (_, _, Some(e)) => format!(
            "<p class=\"rating-error\" title=\"{}\"><i>{}</i></p>",
            escape(rating["cause"].as_str().unwrap_or("")),
            escape(e)
        ),
        _ => String::new(),
    };
    format!(
        "<blockquote><p>{}</p><small>{}</small>{stars}</blockquote>",
        escape(review["text"].as_str().unwrap_or("")),
        escape(review["reviewer"].as_str().unwrap_or(""))
    )
}

/// Full and empty stars out of five in the version's colour (only "black" or "red").
fn stars(full: usize, color: &str) -> String {
    let color = if color == "red" { "red" } else { "black" };
    format!(
        "<span class=\"stars stars-{color}\" style=\"color: {color}\" title=\"{full} of 5 stars\">{}{}</span>",
        "\u{2605}".repeat(full),
        "\u{2606}".repeat(5 - full)
    )
}

/// Istio's heading and sentence, then what actually failed (timeout, status) in small print.
fn unavailable(title: &str, sentence: &str, cause: &str) -> String {
    format!(
        "<h4 class=\"text-center text-primary\">{title}</h4><p>{sentence}</p><p class=\"cause\">{}</p>",
        escape(cause)
    )
}

/// A JSON scalar as page text (strings without their quotes).
fn plain(v: &Value) -> String {
    escape(&v.as_str().map_or_else(|| v.to_string(), str::to_owned))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data;

    fn view<'a>(user: Option<&'a str>, product: &'a Value, reviews: Result<(String, Value), String>) -> View<'a> {
        View {
            served_by: "productpage-v1",
            user,
            product,
            details: Ok(data::details("details-v1", 0)),
            reviews,
        }
    }

    #[test]
    fn stars_follow_the_reviews_version() {
        let products = data::products();
        let ratings = data::ratings("ratings-v1", 0);
        let v1 = data::reviews("reviews-v1", 0, data::star_color("v1"), Ok(&ratings));
        let page = render(&view(None, &products[0], Ok(("reviews-v1".into(), v1))));
        assert!(!page.contains('\u{2605}') && page.contains("Reviews served by: <b>reviews-v1</b>"));
        assert!(page.contains("id=\"sign-in\"") && page.contains("action=\"login\""));
        let v2 = data::reviews("reviews-v2", 0, data::star_color("v2"), Ok(&ratings));
        let page = render(&view(Some("jason"), &products[0], Ok(("reviews-v2".into(), v2))));
        assert!(page.contains(
            "stars-black\" style=\"color: black\" title=\"5 of 5 stars\">\u{2605}\u{2605}\u{2605}\u{2605}\u{2605}<"
        ));
        assert!(page.contains("title=\"4 of 5 stars\">\u{2605}\u{2605}\u{2605}\u{2605}\u{2606}<"));
        assert!(page.contains("jason ( <a href=\"logout\"") && !page.contains("id=\"sign-in\""));
        let v3 = data::reviews("reviews-v3", 0, data::star_color("v3"), Ok(&ratings));
        let page = render(&view(None, &products[0], Ok(("reviews-v3".into(), v3))));
        assert!(page.contains("stars-red\" style=\"color: red\""));
    }

    #[test]
    fn failures_show_istios_texts() {
        let products = data::products();
        let v2 = data::reviews("reviews-v2", 0, data::star_color("v2"), Err("HTTP 500".into()));
        let page = render(&view(None, &products[0], Ok(("reviews-v2".into(), v2))));
        assert!(
            page.contains("<i>Ratings service is currently unavailable</i>"),
            "{page}"
        );
        let mut v = view(None, &products[0], Err("reviews timed out after 3000 ms".into()));
        v.details = Err("HTTP 503".into());
        let page = render(&v);
        assert!(page.contains("Error fetching product details!"));
        assert!(page.contains("Sorry, product details are currently unavailable for this book."));
        assert!(page.contains("Error fetching product reviews!"));
        assert!(page.contains("Sorry, product reviews are currently unavailable for this book."));
        assert!(page.contains("reviews timed out after 3000 ms") && !page.contains("Reviews served by"));
    }

    #[test]
    fn user_names_are_escaped() {
        let products = data::products();
        let page = render(&view(Some("<script>"), &products[0], Err("x".into())));
        assert!(page.contains("&lt;script&gt;") && !page.contains("<script>"));
    }
}
