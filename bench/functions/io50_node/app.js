// A Node handler awaiting 50 ms of I/O (the Node twin of bench/functions/io50/app.py).
exports.handler = async () => {
  await new Promise((resolve) => setTimeout(resolve, 50));
  return { statusCode: 200, body: "ok" };
};
