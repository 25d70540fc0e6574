// "Copy curl": the job's API request, to script what the page shows. The API key is left as a
// variable: a secret does not belong on a clipboard or a screen.
import { getApiKey, jobUrl } from "./api.js";

function curlCommand(job) {
  const auth = getApiKey() ? ' -H "Authorization: Bearer $NEXP_API_KEY"' : "";
  return `curl${auth} ${location.origin}${jobUrl(job.id)}`;
}

/** On click, copy the open job's curl command and show it (the clipboard needs a secure
 * context: over plain http to another host, the shown command is there to select). */
export function copyCurlOnClick(button, openJob, onError) {
  const shown = document.getElementById(button.getAttribute("aria-controls"));
  button.addEventListener("click", async () => {
    const command = curlCommand(openJob());
    shown.textContent = command;
    shown.hidden = false;
    try {
      await navigator.clipboard.writeText(command);
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = "Copy curl"; }, 2000);
    } catch (error) {
      if (window.isSecureContext) onError(error);
    }
  });
}
