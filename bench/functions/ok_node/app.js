// The trivial Node handler the benchmarks invoke (the Node twin of bench/functions/ok/app.py).
exports.handler = async () => ({ statusCode: 200, body: "ok" });
