//! What keeps a template from taking the process down: templates that recurse or nest
//! too deeply are refused when they are compiled, and every render runs under a
//! budget (time, output size), so no config, however it got in, can overflow a
//! stack or exhaust memory or a worker.
//!
//! handlebars renders by recursion on the calling thread: a partial that includes
//! itself, or a few thousand nested blocks, overflow the stack and abort the whole
//! process. Compilation therefore measures every template: nesting of blocks, with
//! partials expanded, and the partial graph, which must have no cycle. Partials whose
//! name is computed at render time cannot be measured and are refused. Loops are
//! the other way to spend without bound (a loop in a loop over a large payload
//! array): a template may run a bounded number of loops, none inside another.
//! handlebars offers no hook inside its built-in helpers, so the render deadline is
//! checked where output is written; the static rules bound what runs between writes.

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::{Duration, Instant};

use handlebars::template::{Parameter, Template, TemplateElement};

/// Blocks and partials nested in one another, partials expanded. The built-in
/// templates use 4; a tokio worker's stack holds a few hundred.
pub const MAX_NESTING: usize = 32;
/// `{{#each}}` loops one template may run, partials expanded: each is bounded by
/// the payload, which the body limit bounds.
pub const MAX_LOOPS: usize = 32;
/// Bytes one rendered part (subject, HTML or text) may have.
pub const MAX_RENDERED_BYTES: usize = 256 * 1024;
/// Time one email's render may take (a legitimate one takes microseconds).
pub const MAX_RENDER_TIME: Duration = Duration::from_secs(1);

/// Why a template was refused before it could be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unbounded {
    /// Blocks and partials nest deeper than [`MAX_NESTING`].
    TooDeep,
    /// A partial includes itself, directly or through others.
    Recursion { partial: String },
    /// A partial whose name is computed when rendering.
    DynamicPartial,
    /// A loop inside a loop: its work grows with the square of the payload.
    NestedLoops,
    /// More than [`MAX_LOOPS`] loops, partials expanded.
    TooManyLoops,
}

impl std::fmt::Display for Unbounded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooDeep => write!(
                f,
                "blocks and partials nest more than {MAX_NESTING} deep; flatten the template"
            ),
            Self::Recursion { partial } => write!(
                f,
                "partial \"{partial}\" includes itself (directly or through other partials); recursive partials are not allowed"
            ),
            Self::DynamicPartial => f.write_str(
                "a partial's name is computed when rendering (`{{> (…)}}`); name partials literally",
            ),
            Self::NestedLoops => f.write_str(
                "an {{#each}} loop inside another loop (partials included) is not allowed: its work grows with the square of the payload",
            ),
            Self::TooManyLoops => write!(
                f,
                "more than {MAX_LOOPS} {{{{#each}}}} loops (partials counted each time they are included)"
            ),
        }
    }
}

/// The deepest nesting of `{{#…}}` blocks in `source`, counted on the text itself
/// (over-counting is safe). Checked before handlebars parses or renders anything,
/// since both recurse on nesting.
pub fn lexical_nesting(source: &str) -> usize {
    let bytes = source.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while let Some(offset) = source[i..].find("{{") {
        let mut j = i + offset + 2;
        while j < bytes.len() && matches!(bytes[j], b'{' | b'~' | b' ' | b'\t' | b'\r' | b'\n') {
            j += 1;
        }
        match bytes.get(j) {
            Some(b'#') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Some(b'/') => depth = depth.saturating_sub(1),
            _ => {}
        }
        i = j;
    }
    deepest
}

/// What a template costs when rendered, partials expanded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cost {
    /// Blocks and partials nested in one another.
    depth: usize,
    /// `{{#each}}` blocks, counted as often as they are included.
    loops: usize,
    /// `{{#each}}` blocks nested in one another.
    loop_depth: usize,
}

impl Cost {
    fn max(self, other: Cost) -> Cost {
        Cost {
            depth: self.depth.max(other.depth),
            loops: self.loops.max(other.loops),
            loop_depth: self.loop_depth.max(other.loop_depth),
        }
    }

    fn check(self) -> Result<Cost, Unbounded> {
        if self.depth > MAX_NESTING {
            Err(Unbounded::TooDeep)
        } else if self.loop_depth > 1 {
            Err(Unbounded::NestedLoops)
        } else if self.loops > MAX_LOOPS {
            Err(Unbounded::TooManyLoops)
        } else {
            Ok(self)
        }
    }
}

/// One registry's templates, measured as a whole: each template may include any
/// other registered template or inline partial by name.
pub struct Measure<'a> {
    templates: HashMap<&'a str, &'a Template>,
    /// Inline partials, by name, wherever they are defined (conservative: a name
    /// defined twice counts as the costlier).
    inline: HashMap<String, Vec<&'a Template>>,
    cost: HashMap<String, Cost>,
    visiting: HashSet<String>,
}

impl<'a> Measure<'a> {
    pub fn new(templates: impl IntoIterator<Item = (&'a str, &'a Template)>) -> Self {
        let templates: HashMap<&str, &Template> = templates.into_iter().collect();
        let mut inline = HashMap::new();
        for template in templates.values() {
            collect_inline(template, &mut inline);
        }
        Self {
            templates,
            inline,
            cost: HashMap::new(),
            visiting: HashSet::new(),
        }
    }

    /// Check the template registered as `name`.
    pub fn check(&mut self, name: &str) -> Result<(), Unbounded> {
        self.partial(name).map(drop)
    }

    /// Cost of the partial (or registered template) `name`, fully expanded.
    fn partial(&mut self, name: &str) -> Result<Cost, Unbounded> {
        if let Some(cost) = self.cost.get(name) {
            return Ok(*cost);
        }
        if !self.visiting.insert(name.to_owned()) {
            return Err(Unbounded::Recursion {
                partial: name.to_owned(),
            });
        }
        let mut bodies: Vec<&'a Template> = self.inline.get(name).cloned().unwrap_or_default();
        if let Some(template) = self.templates.get(name) {
            bodies.push(template);
        }
        let mut cost = Cost::default();
        for body in bodies {
            cost = cost.max(self.elements(body, 0)?);
        }
        self.visiting.remove(name);
        self.cost.insert(name.to_owned(), cost);
        Ok(cost)
    }

    /// Cost of a template's elements; `level` is how deep it already is, so a too
    /// deep template stops the walk early.
    fn elements(&mut self, template: &'a Template, level: usize) -> Result<Cost, Unbounded> {
        if level > MAX_NESTING {
            return Err(Unbounded::TooDeep);
        }
        let mut total = Cost::default();
        for element in &template.elements {
            let cost = match element {
                TemplateElement::HelperBlock(helper) => {
                    let mut inner = Cost::default();
                    let mut loops = 0;
                    for body in [&helper.template, &helper.inverse].into_iter().flatten() {
                        let body = self.elements(body, level + 1)?;
                        loops += body.loops;
                        inner = inner.max(body);
                    }
                    let is_loop = usize::from(helper.name.as_name() == Some("each"));
                    Cost {
                        depth: 1 + inner.depth,
                        loops: loops + is_loop,
                        loop_depth: inner.loop_depth + is_loop,
                    }
                }
                // An inline partial's body counts where it is included.
                TemplateElement::DecoratorBlock(decorator)
                | TemplateElement::DecoratorExpression(decorator)
                    if decorator.name.as_name() == Some("inline") =>
                {
                    Cost::default()
                }
                TemplateElement::DecoratorBlock(decorator) => match &decorator.template {
                    Some(body) => {
                        let body = self.elements(body, level + 1)?;
                        Cost {
                            depth: 1 + body.depth,
                            ..body
                        }
                    }
                    None => Cost {
                        depth: 1,
                        ..Cost::default()
                    },
                },
                TemplateElement::PartialExpression(partial)
                | TemplateElement::PartialBlock(partial) => {
                    let mut inner = match partial_name(&partial.name)? {
                        // The caller's block, already rendered to text.
                        Some(name) if name == "@partial-block" => Cost::default(),
                        Some(name) => self.partial(&name)?,
                        None => Cost::default(),
                    };
                    if let Some(body) = &partial.template {
                        let body = self.elements(body, level + 1)?;
                        inner = Cost {
                            loops: inner.loops + body.loops,
                            ..inner.max(body)
                        };
                    }
                    Cost {
                        depth: 1 + inner.depth,
                        ..inner
                    }
                }
                _ => Cost::default(),
            };
            total = Cost {
                depth: total.depth.max(level + cost.depth),
                loops: total.loops + cost.loops,
                loop_depth: total.loop_depth.max(cost.loop_depth),
            }
            .check()?;
        }
        Ok(Cost {
            depth: total.depth.saturating_sub(level),
            ..total
        })
    }
}

/// A partial's literal name; `Err` when it is computed at render time.
fn partial_name(name: &Parameter) -> Result<Option<String>, Unbounded> {
    match name {
        Parameter::Subexpression(_) => Err(Unbounded::DynamicPartial),
        Parameter::Literal(serde_json::Value::String(name)) => Ok(Some(name.clone())),
        Parameter::Literal(_) => Ok(None),
        other => Ok(other.as_name().map(str::to_owned)),
    }
}

fn collect_inline<'a>(template: &'a Template, found: &mut HashMap<String, Vec<&'a Template>>) {
    for element in &template.elements {
        match element {
            TemplateElement::DecoratorBlock(decorator) => {
                if let Some(body) = &decorator.template {
                    let name = decorator.params.first().and_then(|p| match p {
                        Parameter::Literal(serde_json::Value::String(name)) => Some(name.clone()),
                        other => other.as_name().map(str::to_owned),
                    });
                    if let (Some("inline"), Some(name)) = (decorator.name.as_name(), name) {
                        found.entry(name).or_default().push(body);
                    }
                    collect_inline(body, found);
                }
            }
            TemplateElement::HelperBlock(helper) => {
                for body in [&helper.template, &helper.inverse].into_iter().flatten() {
                    collect_inline(body, found);
                }
            }
            TemplateElement::PartialBlock(partial) => {
                if let Some(body) = &partial.template {
                    collect_inline(body, found);
                }
            }
            _ => {}
        }
    }
}

/// A render target that refuses to grow past [`MAX_RENDERED_BYTES`] or to be
/// written after its deadline.
pub struct BoundedBuffer {
    bytes: Vec<u8>,
    deadline: Instant,
    /// Why writing stopped, when it did.
    pub stopped: Option<String>,
}

impl BoundedBuffer {
    /// A buffer for one part of a render that must end by `deadline`, with room
    /// for `capacity` bytes (at most the part's bound).
    pub fn with_capacity(deadline: Instant, capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity.min(MAX_RENDERED_BYTES)),
            deadline,
            stopped: None,
        }
    }
}

impl io::Write for BoundedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDERED_BYTES {
            self.stopped = Some(format!(
                "the rendered part is larger than {} KiB; check loops over the payload",
                MAX_RENDERED_BYTES / 1024
            ));
            return Err(io::Error::other("the rendered email is too large"));
        }
        if Instant::now() > self.deadline {
            self.stopped = Some(format!(
                "rendering took longer than {} ms",
                MAX_RENDER_TIME.as_millis()
            ));
            return Err(io::Error::other("rendering took too long"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BoundedBuffer {
    /// The text written; handlebars writes only `&str` segments, so it is UTF-8.
    pub fn into_string(self) -> String {
        String::from_utf8(self.bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_nesting_counts_open_blocks() {
        assert_eq!(lexical_nesting("plain"), 0);
        assert_eq!(lexical_nesting("{{#if a}}x{{/if}}{{#if b}}y{{/if}}"), 1);
        assert_eq!(
            lexical_nesting("{{#if a}}{{~#each b}}{{{{raw}}}}{{/each}}{{/if}}"),
            2
        );
        assert_eq!(lexical_nesting(&"{{#if a}}".repeat(5000)), 5000);
    }
}
