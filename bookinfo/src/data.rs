//! What details, reviews and ratings answer, and productpage's product list: the
//! JSON shapes of Istio's Bookinfo, plus `servedBy` naming the version that answered.

use serde_json::{Value, json};

/// The ratings error reviews v2/v3 put in place of stars, worded as Istio's reviews service does.
pub const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

/// The one book Bookinfo sells (productpage's `/api/v1/products`).
pub fn products() -> Value {
    json!([{
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: \
            The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of \
            his most farcical comedies, with a major part of the humour coming from slapstick and mistaken \
            identity, in addition to puns and word play."
    }])
}

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

/// `ratings` is what the call to ratings gave: its JSON, or why it failed (kept in
/// `cause` so a person can tell a fault injection from a refused connection).
pub fn reviews(served_by: &str, id: u32, color: Option<&str>, ratings: Result<&Value, String>) -> Value {
    let rating = |reviewer: &str| match (&ratings, color) {
        (_, None) => Value::Null,
        (Ok(r), Some(c)) => json!({ "stars": r["ratings"][reviewer], "color": c }),
        (Err(e), Some(_)) => json!({ "error": RATINGS_UNAVAILABLE, "cause": e }),
    };
    json!({
        "id": id, "podname": served_by, "servedBy": served_by,
        "reviews": [
            { "reviewer": "Reviewer1", "text": "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!", "rating": rating("Reviewer1") },
            { "reviewer": "Reviewer2", "text": "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.", "rating": rating("Reviewer2") },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviews_carry_stars_by_version_and_the_ratings_error_as_istio_words_it() {
        let r = ratings("ratings-v1", 0);
        assert_eq!(
            reviews("reviews-v1", 0, star_color("v1"), Ok(&r))["reviews"][0]["rating"],
            Value::Null
        );
        let v3 = reviews("reviews-v3", 0, star_color("v3"), Ok(&r));
        assert_eq!(v3["reviews"][0]["rating"], json!({"stars": 5, "color": "red"}));
        let v2 = reviews("reviews-v2", 0, star_color("v2"), Err("HTTP 500".into()));
        assert_eq!(v2["reviews"][1]["rating"]["error"], RATINGS_UNAVAILABLE);
        assert_eq!(v2["reviews"][1]["rating"]["cause"], "HTTP 500");
    }
}
