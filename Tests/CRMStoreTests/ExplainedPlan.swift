import CRMCore
import CRMStore
import XCTest

/// Reading PostgreSQL's `EXPLAIN (FORMAT JSON)` output, for the tests that hold a statement
/// to its plan.
enum ExplainedPlan {
    /// The plan of a prepared statement executed with `arguments` (spliced as literals: the
    /// plan is the generic or custom one `plan_cache_mode` gives, not a literal query's).
    static func of(_ statement: SQL, named name: String, on c: Connection) throws -> JSON {
        try c.execute(SQL(stringLiteral: "PREPARE \(name) AS " + statement.text))
        let arguments = statement.parameters.map { $0.map { "'\($0.replacingOccurrences(of: "'", with: "''"))'" } ?? "NULL" }
        let call = arguments.isEmpty ? name : "\(name)(\(arguments.joined(separator: ", ")))"
        let explained = try XCTUnwrap(try c.scalar(SQL(stringLiteral: "EXPLAIN (FORMAT JSON) EXECUTE \(call)")))
        return try XCTUnwrap(try JSONParser.parse(explained).arrayValue?.first?["Plan"], explained)
    }

    /// Plan nodes, depth first, as "Node Type[ on Index Name]".
    static func nodes(_ plan: JSON) -> [String] {
        var here = plan["Node Type"]?.stringValue ?? "?"
        if let index = plan["Index Name"]?.stringValue {
            here += " on \(index)"
        } else if let table = plan["Relation Name"]?.stringValue {
            here += " on \(table)"
        }
        return [here] + (plan["Plans"]?.arrayValue ?? []).flatMap(nodes)
    }

    /// Named subplans (CTEs) anywhere in the tree, with their nodes.
    static func subplans(_ plan: JSON) -> [(String, [String])] {
        let here = plan["Subplan Name"]?.stringValue.map { [($0, nodes(plan))] } ?? []
        return here + (plan["Plans"]?.arrayValue ?? []).flatMap(subplans)
    }

    /// Every node's `Index Cond`, depth first.
    static func indexConditions(_ plan: JSON) -> [String] {
        (plan["Index Cond"]?.stringValue.map { [$0] } ?? []) + (plan["Plans"]?.arrayValue ?? []).flatMap(indexConditions)
    }
}
