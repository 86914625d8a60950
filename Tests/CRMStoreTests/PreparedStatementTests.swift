import CRMCore
import XCTest

@testable import CRMStore

/// Statements with parameters are prepared once per connection, and their column names are
/// read from libpq only once: a schema change must still show through.
final class PreparedStatementTests: XCTestCase {
    func testAChangedTableIsPreparedAfreshWithItsNewColumns() throws {
        let db = try ScratchDatabase.create(for: self)
        let c = try Connection(dsn: db.dsn, connectTimeoutSeconds: 5)
        try c.execute("CREATE TABLE t (id int, a text)")
        try c.execute("INSERT INTO t VALUES (1, 'x'), (2, 'y')")
        let select: (Int) -> SQL = { id in "SELECT * FROM t WHERE id = \(id)" }
        XCTAssertEqual(try c.execute(select(1)).first?.string("a"), "x")
        XCTAssertEqual(try c.execute(select(2)).first?.string("a"), "y", "the same statement, its columns known")
        try c.execute("ALTER TABLE t ADD COLUMN b text DEFAULT 'new'")
        let row = try XCTUnwrap(c.execute(select(1)).first)
        XCTAssertEqual(row.string("a"), "x")
        XCTAssertEqual(row.string("b"), "new", "a plan whose result changed is prepared again, with the new column names")
        try c.execute("ALTER TABLE t RENAME COLUMN a TO renamed")
        let renamed = try XCTUnwrap(c.execute(select(2)).first)
        XCTAssertEqual(renamed.string("renamed"), "y")
        XCTAssertNil(renamed.string("a"))
    }

    func testAffectedRowsAreCounted() throws {
        let db = try ScratchDatabase.create(for: self)
        let c = try Connection(dsn: db.dsn, connectTimeoutSeconds: 5)
        try c.execute("CREATE TABLE t (id int)")
        XCTAssertEqual(try c.execute("INSERT INTO t SELECT generate_series(1, \(1234))").affectedRows, 1234)
        XCTAssertEqual(try c.execute("DELETE FROM t WHERE id > \(1000)").affectedRows, 234)
        XCTAssertEqual(try c.execute("SELECT 1 WHERE \(false)").affectedRows, 0)
        XCTAssertEqual(Connection.affectedRows(nil), 0)
        XCTAssertEqual("".withCString { Connection.affectedRows($0) }, 0)
        XCTAssertEqual("42".withCString { Connection.affectedRows($0) }, 42)
    }
}
