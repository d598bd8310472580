import Foundation
import GRDB

extension SubjectStore {
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.create(table: "subject") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("name", .text).notNull().unique().collate(.nocase)
                t.column("token", .text).notNull()
                t.column("classNoun", .text).notNull()
                t.column("notes", .text).notNull().defaults(to: "")
                t.column("createdAt", .datetime).notNull()
                t.column("updatedAt", .datetime).notNull()
            }
            try db.create(table: "photo") { t in
                t.autoIncrementedPrimaryKey("id")
                t.belongsTo("subject", onDelete: .cascade).notNull()
                t.column("sha256", .text).notNull()
                t.column("originalName", .text).notNull()
                t.column("path", .text).notNull().unique()
                t.column("byteCount", .integer).notNull()
                t.column("width", .integer).notNull()
                t.column("height", .integer).notNull()
                t.column("addedAt", .datetime).notNull()
                t.uniqueKey(["subjectId", "sha256"])
            }
            try db.create(table: "trainingRun") { t in
                t.autoIncrementedPrimaryKey("id")
                t.belongsTo("subject", onDelete: .cascade).notNull()
                t.column("status", .text).notNull()
                    .check { RunStatus.allCases.map(\.rawValue).contains($0) }
                t.column("baseModelPath", .text).notNull()
                t.column("baseModelFingerprint", .text).notNull()
                t.column("recipe", .text).notNull()
                t.column("totalSteps", .integer).notNull()
                t.column("stepsDone", .integer).notNull().defaults(to: 0)
                t.column("lastLoss", .double)
                t.column("createdAt", .datetime).notNull()
                t.column("startedAt", .datetime)
                t.column("finishedAt", .datetime)
                t.column("updatedAt", .datetime).notNull()
                t.column("elapsedSeconds", .double).notNull().defaults(to: 0)
                t.column("errorMessage", .text)
            }
            try db.create(table: "checkpoint") { t in
                t.autoIncrementedPrimaryKey("id")
                t.belongsTo("run", inTable: "trainingRun", onDelete: .cascade).notNull()
                t.column("step", .integer).notNull()
                t.column("kind", .text).notNull()
                    .check { CheckpointKind.allCases.map(\.rawValue).contains($0) }
                t.column("path", .text).notNull().unique()
                t.column("sha256", .text).notNull()
                t.column("byteCount", .integer).notNull()
                t.column("createdAt", .datetime).notNull()
                t.uniqueKey(["runId", "step", "kind"])
            }
            try db.create(table: "generation") { t in
                t.autoIncrementedPrimaryKey("id")
                t.belongsTo("subject", onDelete: .cascade).notNull()
                t.belongsTo("run", inTable: "trainingRun", onDelete: .setNull)
                t.belongsTo("checkpoint", onDelete: .setNull)
                t.column("prompt", .text).notNull()
                t.column("negativePrompt", .text).notNull().defaults(to: "")
                t.column("seed", .integer).notNull()
                t.column("steps", .integer).notNull()
                t.column("scheduler", .text).notNull()
                t.column("guidanceScale", .double).notNull()
                t.column("width", .integer).notNull()
                t.column("height", .integer).notNull()
                t.column("imagePath", .text).notNull().unique()
                t.column("createdAt", .datetime).notNull()
            }
            try db.execute(sql: "PRAGMA user_version = 1")
        }
        // The service's API keys (only a hash of each secret), and which key made a
        // subject: NULL for subjects made on the command line.
        m.registerMigration("v2") { db in
            try db.create(table: APIKey.databaseTableName) { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("name", .text).notNull().unique().collate(.nocase)
                t.column("secret_sha256", .text).notNull().unique()
                t.column("created_at", .datetime).notNull()
                t.column("revoked_at", .datetime)
            }
            try db.alter(table: "subject") { t in
                t.add(column: SubjectOwnership.column, .integer).references(APIKey.databaseTableName)
            }
            try db.create(index: "subject_on_\(SubjectOwnership.column)", on: "subject", columns: [SubjectOwnership.column])
            try db.execute(sql: "PRAGMA user_version = 2")
        }
        return m
    }
}
