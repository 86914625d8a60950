/// A task executor that runs each job at once on the thread that enqueues it: a task waiting
/// on a CRM call or a database write continues on the thread that completed it (the curl loop,
/// a group-commit writer) instead of waking a thread of the cooperative pool. For tasks whose
/// steps between suspensions are short and never block, such as a request's delivery.
public final class InlineExecutor: TaskExecutor {
    public static let shared = InlineExecutor()

    public func enqueue(_ job: consuming ExecutorJob) {
        job.runSynchronously(on: asUnownedTaskExecutor())
    }
}
