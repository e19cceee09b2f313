//! An error and its causes as one line.

/// The error and its causes on one line, as `a: b: c`. Many errors already print their
/// source; a cause whose text is already shown is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let shown = c.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct E {
        text: &'static str,
        #[source]
        source: Option<Box<E>>,
    }

    fn e(text: &'static str, source: Option<E>) -> E {
        E {
            text,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn causes_are_joined_once() {
        let plain = e("a", Some(e("b", Some(e("c", None)))));
        assert_eq!(error_chain(&plain), "a: b: c");
        // `a: b` already shows its source: it is not said twice.
        let echoing = e("a: b", Some(e("b", None)));
        assert_eq!(error_chain(&echoing), "a: b");
    }
}
