//! The `[[client]]` tables: unique token names, a known role, and a scope
//! that is a node of the tree.

use std::collections::{HashMap, HashSet};

use crate::error::Sink;
use crate::model::{Client, ClientRole, Node};
use crate::raw::RawClient;

use super::node::is_token;

type S<T> = serde_spanned::Spanned<T>;

pub(super) fn clients(s: &mut Sink, raw: &[S<RawClient>], nodes: &[Node]) -> Vec<Client> {
    let ids: HashSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for rc in raw {
        let rc = rc.get_ref();
        let name = rc.name.get_ref();
        let line = s.position(rc.name.span().start).0;
        if !is_token(name) {
            s.error(
                rc.name.span(),
                format!(
                    "client name {name:?}: expected one token of lowercase letters, digits and \"_\", e.g. \"ops_south\""
                ),
            );
        } else if let Some(first) = first_line.get(name) {
            s.error(
                rc.name.span(),
                format!("duplicate client \"{name}\" (first at line {first})"),
            );
        } else {
            first_line.insert(name.clone(), line);
        }
        let role = match rc.role.get_ref().parse::<ClientRole>() {
            Ok(r) => r,
            Err(e) => {
                s.error(rc.role.span(), e.to_string());
                ClientRole::Viewer
            }
        };
        let scope = rc.scope.get_ref();
        if !ids.contains(scope.as_str()) {
            s.error(
                rc.scope.span(),
                format!("client \"{name}\": scope {scope:?} is not a node of the tree"),
            );
        }
        out.push(Client {
            name: name.clone(),
            role,
            scope: scope.clone(),
            password_hash: rc.password_hash.clone(),
            line,
        });
    }
    out
}
