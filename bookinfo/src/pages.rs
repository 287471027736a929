//! What each service answers. JSON for details/reviews/ratings, HTML for productpage.

use serde_json::{Value, json};

pub fn details(served_by: &str, id: u32) -> Value {
    json!({
        "id": id, "author": "William Shakespeare", "year": 1595, "type": "paperback",
        "pages": 200, "publisher": "PublisherA", "language": "English",
        "ISBN-10": "1234567890", "ISBN-13": "123-1234567890", "servedBy": served_by,
    })
}

pub fn ratings(served_by: &str, id: u32) -> Value {
    json!({ "id": id, "ratings": { "Reviewer1": 5, "Reviewer2": 4 }, "servedBy": served_by })
}

/// Star colour per reviews version: v1 shows none, v2 black, v3 red (as in Bookinfo).
pub fn star_color(version: &str) -> Option<&'static str> {
    match version {
        "v1" => None,
        "v3" => Some("red"),
        _ => Some("black"),
    }
}

pub fn reviews(served_by: &str, id: u32, color: Option<&str>, ratings: Result<&Value, String>) -> Value {
    let rating = |reviewer: &str| match (&ratings, color) {
        (_, None) => Value::Null,
        (Ok(r), Some(c)) => json!({ "stars": r["ratings"][reviewer], "color": c }),
        (Err(e), Some(_)) => json!({ "error": format!("Ratings service unavailable: {e}") }),
    };
    json!({
        "id": id, "podname": served_by, "servedBy": served_by,
        "reviews": [
            { "reviewer": "Reviewer1", "text": "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!", "rating": rating("Reviewer1") },
            { "reviewer": "Reviewer2", "text": "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.", "rating": rating("Reviewer2") },
        ],
    })
}

pub fn productpage(
    served_by: &str,
    user: Option<&str>,
    details: Result<Value, String>,
    reviews: Result<(String, Value), String>,
) -> String {
    let user_line = match user {
        Some(u) => format!("<p class=\"user\">Signed in as <b>{}</b></p>", escape(u)),
        None => "<p class=\"user\">Not signed in (send header <code>end-user: jason</code>)</p>".into(),
    };
    let details_html = match details {
        Ok(d) => format!(
            "<dl class=\"details\"><dt>Type</dt><dd>{}</dd><dt>Pages</dt><dd>{}</dd><dt>Publisher</dt><dd>{}</dd><dt>Served by</dt><dd>{}</dd></dl>",
            plain(&d["type"]),
            plain(&d["pages"]),
            plain(&d["publisher"]),
            plain(&d["servedBy"])
        ),
        Err(e) => format!(
            "<p class=\"error\">Sorry, product details are currently unavailable for this book. ({})</p>",
            escape(&e)
        ),
    };
    let reviews_html = match reviews {
        Ok((served, r)) => reviews_block(&served, &r),
        Err(e) => format!(
            "<p class=\"error\">Error fetching product reviews: Sorry, product reviews are currently unavailable for this book. ({})</p>",
            escape(&e)
        ),
    };
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Simple Bookstore App</title></head><body>\
         <h1>The Comedy of Errors</h1>{user_line}{details_html}<h2>Book Reviews</h2>{reviews_html}\
         <footer>productpage served by {served_by}</footer></body></html>"
    )
}

fn reviews_block(served_by: &str, r: &Value) -> String {
    let mut out = format!(
        "<div class=\"reviews\" data-served-by=\"{}\"><p>Reviews served by: <b>{}</b></p>",
        escape(served_by),
        escape(served_by)
    );
    for review in r["reviews"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "<blockquote><p>{}</p><small>{}</small>",
            escape(review["text"].as_str().unwrap_or("")),
            escape(review["reviewer"].as_str().unwrap_or(""))
        ));
        let rating = &review["rating"];
        if let Some(e) = rating["error"].as_str() {
            out.push_str(&format!("<p class=\"error\">{}</p>", escape(e)));
        } else if let (Some(n), Some(c)) = (rating["stars"].as_u64(), rating["color"].as_str()) {
            let stars = "★".repeat(n as usize);
            out.push_str(&format!("<font color=\"{c}\" class=\"stars-{c}\">{stars}</font>"));
        }
        out.push_str("</blockquote>");
    }
    out.push_str("</div>");
    out
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

    #[test]
    fn stars_follow_the_reviews_version() {
        let ratings = ratings("ratings-v1", 0);
        let v1 = reviews("reviews-v1", 0, star_color("v1"), Ok(&ratings));
        let page = productpage(
            "productpage-v1",
            None,
            Ok(details("details-v1", 0)),
            Ok(("reviews-v1".into(), v1)),
        );
        assert!(!page.contains("★") && page.contains("reviews-v1"));
        let v3 = reviews("reviews-v3", 0, star_color("v3"), Ok(&ratings));
        let page = productpage(
            "productpage-v1",
            Some("jason"),
            Ok(details("details-v1", 0)),
            Ok(("reviews-v3".into(), v3)),
        );
        assert!(page.contains("stars-red") && page.contains("jason"));
    }

    #[test]
    fn failures_show_bookinfos_messages() {
        let v2 = reviews("reviews-v2", 0, star_color("v2"), Err("HTTP 500".into()));
        let page = productpage("p", None, Err("timed out".into()), Ok(("reviews-v2".into(), v2)));
        assert!(page.contains("Ratings service unavailable"));
        assert!(page.contains("product details are currently unavailable"));
        let page = productpage("p", None, Ok(details("d", 0)), Err("timed out".into()));
        assert!(page.contains("Sorry, product reviews are currently unavailable for this book."));
    }
}
