// Starts Swagger UI on /docs with the proxy's own /openapi.json.
// Everything it loads comes from the proxy itself: no CDN, no validator badge.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    // The default validator is an external service; the proxy may have no internet.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    persistAuthorization: false,
    tryItOutEnabled: false,
  });
});
