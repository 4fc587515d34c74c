// Logto's AWS SES connector (@logto/connector-aws-ses) behind a minimal HTTP server,
// so the load harness can drive it like ses-connector: POST {to, type, payload}.
// LOGTO_CONFIG is the connector config (JSON); PORT the port on 127.0.0.1; SES is
// reached through AWS_ENDPOINT_URL_SESV2 (the stand-in).
import http from 'node:http';
import createConnector from '@logto/connector-aws-ses';

const config = JSON.parse(process.env.LOGTO_CONFIG);
const connector = await createConnector({ getConfig: async () => config });

http
  .createServer(async (request, response) => {
    let body = '';
    for await (const chunk of request) body += chunk;
    try {
      const { to, type, payload } = JSON.parse(body);
      const messageId = await connector.sendMessage({ to, type, payload });
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ messageId }));
    } catch (error) {
      response.writeHead(502, { 'content-type': 'text/plain' });
      response.end(String(error));
    }
  })
  .listen(Number(process.env.PORT), '127.0.0.1');
